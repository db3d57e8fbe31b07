"""The host side: ONNX export, modelopt INT8/FP16 quantization and its policies, the precision census and cost
estimate, the divergence report and auto policy, the onnxruntime and PyTorch runners, the host pipeline.
"""
