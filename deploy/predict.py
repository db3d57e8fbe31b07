#!/usr/bin/env python3
"""Classify images with a bundle, engine, ONNX file or PyTorch weights (top-k classes with probabilities).

The tool lives in scalablevit/cli/predict.py; installed, it is also the command `scalablevit-predict`.
"""
from scalablevit.cli.predict import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
