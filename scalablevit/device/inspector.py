"""Reading TensorRT's engine inspector JSON (``IEngineInspector``, ``ProfilingVerbosity.DETAILED``) and the build
log's per-device layer list.

Pure parsing, no TensorRT needed, so it is tested on CPU with output captured on devices: layers per device
(DLA or GPU), and the precision each layer runs at beside what the ONNX asked for (the precision census).
"""
import json
import re
from typing import Any, Dict, Iterable, List, Optional, Union

__all__ = ['count_layer_devices', 'layer_placement', 'tensor_dtype', 'layer_precisions',
           'precision_mismatches']

# TensorRT's builder logs one message per engine layer after "Layers Running on DLA/GPU" (INFO on 8.x, VERBOSE on
# later JetPack images): "[DlaLayer] {ForeignNode[...]}" (sampleCudla README, release/10.16, prints a trailing
# comma) and "[GpuLayer] POOLING: /pool/GlobalAveragePool" (TensorRT 8.5 on Orin; 8.2 prints no type prefix).
_PLACEMENT = re.compile(r'\[(Dla|Gpu)Layer\]\s*(.*?),?\s*$')


def layer_placement(messages: Iterable[str]) -> Dict[str, List[str]]:
    """``{'dla': [layer names], 'gpu': [layer names]}`` from TensorRT build-log messages or lines."""
    placed: Dict[str, List[str]] = {'dla': [], 'gpu': []}
    for message in messages:
        m = _PLACEMENT.search(str(message))
        if m and m.group(2):
            placed[m.group(1).lower()].append(m.group(2))
    return placed


def count_layer_devices(engine_information: Union[str, Dict[str, Any]], dla_names: Iterable[str] = ()
                        ) -> Dict[str, int]:
    """Per-layer device counts from the engine inspector's JSON (ProfilingVerbosity.DETAILED).

    A layer runs on DLA when its LayerType names DLA or the build log listed its name as a DLA layer
    (``layer_placement``; a DLA subgraph is one engine layer, ``{ForeignNode[...]}``); every other layer runs on
    the GPU. A GPU Myelin subgraph is also named ``{ForeignNode[...]}``, so the name alone does not decide.
    """
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    layers = info.get('Layers', []) if isinstance(info, dict) else []
    names = set(dla_names)

    def on_dla(layer: Any) -> bool:
        if isinstance(layer, dict):
            return 'dla' in str(layer.get('LayerType', '')).lower() or layer.get('Name') in names
        return layer in names  # LAYER_NAMES_ONLY: a list of names
    dla = sum(1 for layer in layers if on_dla(layer))
    return {'total': len(layers), 'dla': dla, 'gpu': len(layers) - dla}


# Inspector dtype words -> our names. Two vocabularies: long format strings of the classic kernels ("Channel major
# FP16 format where channel % 8 == 0", "Thirty-two wide channel vectorized row major Int8 format") and the bare
# names of Myelin layers ("Half", "Float", "Int8"); trex reads both the same way.
_DTYPE_WORDS = {'int8': 'int8', 'fp16': 'fp16', 'half': 'fp16', 'bfloat16': 'bf16', 'fp32': 'fp32', 'float': 'fp32',
                'fp8': 'fp8', 'int4': 'int4', 'fp4': 'fp4', 'fp4e2m1': 'fp4', 'int32': 'int32', 'int64': 'int64',
                'bool': 'bool', 'uint8': 'uint8'}
# How much precision a dtype carries, for "ran at a higher precision than the ONNX asked for".
_RANK = {'fp4': 0, 'int4': 0, 'fp8': 1, 'int8': 1, 'fp16': 2, 'bf16': 2, 'fp32': 3}
_ONNX_LAYER = re.compile(r'\[ONNX Layer: ([^\]\x1e]+)\]')


def tensor_dtype(tensor: Dict[str, Any]) -> Optional[str]:
    """The dtype of one inspector tensor entry (``Format/Datatype``, or ``Datatype``), None when not stated."""
    text = str(tensor.get('Format/Datatype') or tensor.get('Datatype') or '').lower()
    return next((_DTYPE_WORDS[w] for w in re.findall(r'[a-z0-9]+', text) if w in _DTYPE_WORDS), None)


def layer_precisions(engine_information: Union[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per engine layer: name, type, precision and the ONNX nodes it implements (``Metadata``, TensorRT >= 10).

    A layer's precision is its first input's dtype (its output's when it has no input), as trex reads it: an INT8
    convolution reads INT8 whatever it writes. Layers without dtypes (LAYER_NAMES_ONLY builds) get None.
    """
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    found = []
    for layer in (info.get('Layers', []) if isinstance(info, dict) else []):
        if not isinstance(layer, dict):
            found.append({'name': str(layer), 'type': None, 'precision': None, 'onnx_nodes': []})
            continue
        dtypes = [tensor_dtype(t) for t in (*layer.get('Inputs', []), *layer.get('Outputs', [])) if isinstance(t, dict)]
        found.append({'name': layer.get('Name'), 'type': layer.get('LayerType'),
                      'precision': next((d for d in dtypes if d in _RANK), None),
                      'onnx_nodes': _ONNX_LAYER.findall(str(layer.get('Metadata') or ''))})
    return found


def precision_mismatches(layers: List[Dict[str, Any]], onnx_dtypes: Dict[str, str]) -> List[Dict[str, Any]]:
    """Engine layers that run an ONNX node at a higher precision than the ONNX gave it (``onnx_dtypes``: the
    census's node -> int8 / fp16 / fp32). Strongly typed builds should have none; each one costs speed."""
    mismatches = []
    for layer in layers:
        ran = layer['precision']
        for node in layer['onnx_nodes']:
            asked = onnx_dtypes.get(node)
            if ran in _RANK and asked in _RANK and _RANK[ran] > _RANK[asked]:
                mismatches.append({'layer': layer['name'], 'type': layer['type'], 'onnx_node': node,
                                   'onnx_dtype': asked, 'engine_precision': ran})
    return mismatches
