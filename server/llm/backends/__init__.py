"""Inference backends, all behind InferenceBackend (base.py)."""
