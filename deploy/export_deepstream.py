#!/usr/bin/env python3
"""Write a DeepStream (Gst-nvinfer) classifier config, labels file and softmax ONNX from a bundle or engine.

The tool lives in scalablevit/cli/export_deepstream.py; installed, it is also `scalablevit-export-deepstream`.
"""
from scalablevit.cli.export_deepstream import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
