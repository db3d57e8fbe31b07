"""Images for calibration, validation and accuracy: the eval transform, decoding and safe folder walking, the
calibration/reference store, set selection, Fashion-MNIST and the bundled photos.
"""
