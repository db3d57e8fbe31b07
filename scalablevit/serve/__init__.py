"""Serving a bundle: predict on any backend, Triton and DeepStream exports, what a bundle or engine deploys.
"""
