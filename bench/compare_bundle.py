#!/usr/bin/env python3
"""One comparison table for a bundle: every backend and precision, its accuracy and its latency.

The tool lives in scalablevit/cli/compare_bundle.py; installed, it is also the command `scalablevit-compare`.
"""
from scalablevit.cli.compare_bundle import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
