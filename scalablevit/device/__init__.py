"""The device side: TensorRT engines, the CUDA layer, targets, the device pipeline, the self-test and Jetson
facts. It imports only the core, numpy, tensorrt and a CUDA binding: never torch, onnx or modelopt (a
Jetson often has neither; tests/test_layout.py holds the boundary).
"""
