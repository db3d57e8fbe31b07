#!/usr/bin/env python3
"""The main job: build a deployable ScalableViT bundle and, where TensorRT and a GPU are present, its engine.

The tool lives in scalablevit/cli/build_engine.py; installed, it is also the command `scalablevit-build`.
"""
from scalablevit.cli.build_engine import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
