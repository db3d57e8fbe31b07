"""Reading TensorRT's engine inspector JSON (``IEngineInspector``, ``ProfilingVerbosity.DETAILED``).

Pure parsing, no TensorRT needed, so it is tested on CPU with inspector output captured on devices.
"""
import json
from typing import Any, Dict, Union

__all__ = ['count_layer_devices']


def count_layer_devices(engine_information: Union[str, Dict[str, Any]]) -> Dict[str, int]:
    """Per-layer device counts from the engine inspector's JSON (ProfilingVerbosity.DETAILED).

    A DLA subgraph is one engine layer whose LayerType names DLA; every other layer runs on the GPU.
    """
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    layers = info.get('Layers', []) if isinstance(info, dict) else []
    dla = sum(1 for layer in layers if isinstance(layer, dict) and 'dla' in str(layer.get('LayerType', '')).lower())
    return {'total': len(layers), 'dla': dla, 'gpu': len(layers) - dla}


