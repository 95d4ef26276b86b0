"""Backbone families: one module per source (Hugging Face, open_clip), one class per family.

:mod:`model_training.backbone` is the registry that decides which family a name, directory or stored
checkpoint entry is; everything else sees only :class:`model_training.backbones.base.Backbone`.
"""
