"""Builders that turn the raw Shap-CA corpora (+ images and image contexts) into Hub datasets."""
