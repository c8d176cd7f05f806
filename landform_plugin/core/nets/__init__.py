"""Segmentation networks (torch). Importing this package imports torch.

Only ``registry`` is the public entry point: ``build_model`` and
``output_stride``; architectures register themselves in ``registry.ARCHITECTURES``.
"""
