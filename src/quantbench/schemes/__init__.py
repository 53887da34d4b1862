"""Quantization schemes as plug-ins: one module per backend family, found by the registry."""

from quantbench.schemes.registry import Scheme, all_schemes, get, register

__all__ = ["Scheme", "all_schemes", "get", "register"]
