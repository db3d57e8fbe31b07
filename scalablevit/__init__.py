"""ScalableViT for NVIDIA edge deployment: a faithful PyTorch model and an ONNX/TensorRT toolchain.

Only numpy is imported here; torch, onnx, onnxruntime, modelopt and tensorrt are imported by the
modules that need them, so the on-device path (engine build, TensorRT runner) works without torch.
"""
from typing import Any

from .core.errors import CheckpointError, InputSizeError, ScalableViTError

__version__ = '0.1.0'
__all__ = ['ScalableViT', 'create_model', 'list_models', 'ScalableViTError', 'CheckpointError', 'InputSizeError']


def __getattr__(name: str) -> Any:
    # Lazy: `import scalablevit` must not import torch on a Jetson that has only TensorRT.
    if name in ('ScalableViT', 'create_model', 'list_models'):
        from .models import scalablevit as model
        return getattr(model, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
