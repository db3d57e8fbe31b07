#!/usr/bin/env python3
"""Where a quantized ONNX departs from its FP32 source, per block and per node (report, JSON and plot).

The tool lives in scalablevit/cli/divergence.py; installed, it is also the command `scalablevit-divergence`.
"""
from scalablevit.cli.divergence import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
