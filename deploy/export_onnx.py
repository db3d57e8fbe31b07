#!/usr/bin/env python3
"""Export a ScalableViT to one self-contained FP32 ONNX file, checked for TensorRT.

The tool lives in scalablevit/cli/export_onnx.py; installed, it is also the command `scalablevit-export`.
"""
from scalablevit.cli.export_onnx import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
