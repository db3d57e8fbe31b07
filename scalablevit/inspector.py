"""Reading TensorRT's engine inspector JSON (``IEngineInspector``, ``ProfilingVerbosity.DETAILED``) and the build
log's per-device layer list.

Pure parsing, no TensorRT needed, so it is tested on CPU with output captured on devices.
"""
import json
import re
from typing import Any, Dict, Iterable, List, Union

__all__ = ['count_layer_devices', 'layer_placement']

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
