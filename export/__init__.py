"""Checkpoints to a versioned, verified ONNX model repository (``python -m export``)."""

DEFAULT_MAX_SCORE_DROP_POINTS = 0.5
"""Largest competition-score drop, in points, that an fp16 or int8 export may cost unless forced."""
