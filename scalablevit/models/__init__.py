"""The model: ScalableViT in PyTorch, checkpoints, complexity, the normalization fold, class names, shipped weights.
"""
