"""Benchmarks: the benchmark CLIs' runners and reports, the roofline, the prepared GPU check.
"""
