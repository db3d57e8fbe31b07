#!/usr/bin/env python3
"""Jetson benchmark: TensorRT engines with power from tegrastats, the board's facts and the roofline.

The tool lives in scalablevit/cli/jetson_bench.py; installed, it is also the command `scalablevit-jetson-bench`.
"""
from scalablevit.cli.jetson_bench import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
