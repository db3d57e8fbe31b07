#!/usr/bin/env python3
"""First run on a board: check TensorRT, CUDA, the GPU and DLA end to end, and write one JSON for bug reports.

The tool lives in scalablevit/cli/check_device.py; installed, it is also the command `scalablevit-check-device`.
"""
from scalablevit.cli.check_device import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
