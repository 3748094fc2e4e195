"""Bridges to other libraries. Each submodule imports its library itself, so that
``import nonrev`` never needs them:

* :mod:`nonrev.integrations.diffusers`: a diffusers scheduler and pipeline for
  non-reversible kernels (``pip install nonrev[diffusers]``).
"""
