"""Synthetic catalog: product-like images rendered from real label rows (see README, "Synthetic catalog")."""

from model_training.synthetic.render import encode_jpeg, render_image
from model_training.synthetic.sampling import SampledRow, fill_missing, sample_all, sample_rows

__all__ = ["SampledRow", "encode_jpeg", "fill_missing", "render_image", "sample_all", "sample_rows"]
