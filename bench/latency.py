#!/usr/bin/env python3
"""Latency benchmark over PyTorch, onnxruntime and TensorRT runners, with a batch sweep.

The tool lives in scalablevit/cli/latency.py; installed, it is also the command `scalablevit-latency`.
"""
from scalablevit.cli.latency import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
