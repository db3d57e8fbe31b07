#!/usr/bin/env python3
"""The TensorRT latency estimate's error on published engines (fit on one half, checked on the other).

The tool lives in scalablevit/cli/cost_model_check.py; installed, it is also `scalablevit-cost-model-check`.
"""
from scalablevit.cli.cost_model_check import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
