"""Transfer methods as plug-ins of the one training loop (see :mod:`transferkit.methods.base`)."""

from .registry import available_methods, create_method, get_method_class, method_names, register

__all__ = ["available_methods", "create_method", "get_method_class", "method_names", "register"]
