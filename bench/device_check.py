#!/usr/bin/env python3
"""The prepared device check of a GPU machine (PyTorch + CUDA, no TensorRT): see scalablevit/cli/device_check.py."""
from scalablevit.cli.device_check import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
