#!/usr/bin/env python3
"""Write a Triton model repository entry (config.pbtxt, labels, model.onnx or model.plan) from a bundle or engine.

The tool lives in scalablevit/cli/export_triton.py; installed, it is also the command `scalablevit-export-triton`.
"""
from scalablevit.cli.export_triton import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
