"""Deconvolution algorithms: pure init/step cores (em) and cosipy-compatible classes."""
