"""Reproduction of "Identity Crisis" (Zhang et al. 2020)."""
