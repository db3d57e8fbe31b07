#!/usr/bin/env python3
"""TensorRT cost ESTIMATE table: deployed ONNX files or bundles x devices x batch sizes, from the ONNX alone.

The tool lives in scalablevit/cli/cost_estimate.py; installed, it is also the command `scalablevit-cost-estimate`.
"""
from scalablevit.cli.cost_estimate import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
