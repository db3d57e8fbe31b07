#!/usr/bin/env python3
"""Quantize an exported FP32 ScalableViT ONNX with NVIDIA modelopt: INT8 (explicit Q/DQ) or FP16 (AutoCast).

The tool lives in scalablevit/cli/quantize.py; installed, it is also the command `scalablevit-quantize`.
"""
from scalablevit.cli.quantize import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
