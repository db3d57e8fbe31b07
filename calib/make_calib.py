#!/usr/bin/env python3
"""Write a calibration set (.npz of preprocessed images) for INT8 quantization.

The tool lives in scalablevit/cli/make_calib.py; installed, it is also the command `scalablevit-calib`.
"""
from scalablevit.cli.make_calib import main, run  # noqa: F401 (main: for tests and scripting)

if __name__ == '__main__':
    run()
