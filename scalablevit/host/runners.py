"""The host backends of the one Runner interface: PyTorch (``TorchRunner``) and onnxruntime
(``OnnxRuntimeRunner``). Each imports its framework lazily. TensorRT's runner is ``scalablevit.device.trt_runner``.
"""
import logging
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..core.errors import ScalableViTError
from ..core.runners import INPUT_NAME, OUTPUT_NAME, Feed, IOMeta, Runner, resolve_loader

logger = logging.getLogger(__name__)


class TorchRunner(Runner):
    """PyTorch eager, FP32 by default, on CPU or CUDA."""

    backend = 'torch'

    def __init__(self, model: Any, device: str = 'cpu', dtype: str = 'float32', name: Optional[str] = None):
        super().__init__(name or f'torch-{device}-{dtype}')
        self._model_or_loader = model
        self.device = device
        self.dtype = dtype

    def _activate_impl(self) -> None:
        import torch
        self._torch = torch
        self.model = resolve_loader(self._model_or_loader).eval().to(device=self.device, dtype=getattr(torch, self.dtype))
        self._in_chans = self.model.in_chans

    def _input_metadata_impl(self) -> IOMeta:
        return {INPUT_NAME: (np.dtype(np.float32), (None, self._in_chans, None, None))}

    def _infer_impl(self, feed: Feed) -> Feed:
        torch = self._torch
        x = torch.from_numpy(feed[INPUT_NAME]).to(device=self.device, dtype=getattr(torch, self.dtype))
        with torch.inference_mode():
            y = self.model(x)
            if self.device.startswith('cuda'):
                torch.cuda.synchronize()
        return {OUTPUT_NAME: y.float().cpu().numpy()}


class OnnxRuntimeRunner(Runner):
    """onnxruntime session over an ONNX file or serialized model (CPU unless providers say otherwise)."""

    backend = 'onnxruntime'

    def __init__(self, onnx: Union[str, bytes], providers: Sequence[str] = ('CPUExecutionProvider',),
                 threads: Optional[int] = None, name: Optional[str] = None):
        super().__init__(name or 'onnxruntime')
        self.onnx = onnx
        self.providers = list(providers)
        self.threads = threads

    def _activate_impl(self) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        source = str(self.onnx) if not isinstance(self.onnx, bytes) else self.onnx
        try:
            self.session = ort.InferenceSession(source, options, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ScalableViTError(f'onnxruntime cannot load {self.onnx if isinstance(self.onnx, str) else "model"}: '
                                   f'{str(e).splitlines()[0]}') from e
        self._meta = {i.name: (np.dtype(_ORT_TYPES.get(i.type, np.float32)),
                               tuple(d if isinstance(d, int) else None for d in i.shape))
                      for i in self.session.get_inputs()}
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate_impl(self) -> None:
        del self.session

    def _input_metadata_impl(self) -> IOMeta:
        return self._meta

    def _infer_impl(self, feed: Feed) -> Feed:
        return dict(zip(self._output_names, self.session.run(self._output_names, feed)))


_ORT_TYPES = {'tensor(float)': np.float32, 'tensor(float16)': np.float16, 'tensor(int64)': np.int64}
