#!/usr/bin/env python3
"""Top-1 of a reference runner and candidate runners on a labelled image folder (ImageNet-style).

The tool lives in scalablevit/cli/accuracy.py; installed, it is also the command `scalablevit-accuracy`.
"""
from scalablevit.cli.accuracy import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
