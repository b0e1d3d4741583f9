"""Data files that ship inside installed Python packages, found without importing those packages.

Several packages that carry the built-in data (and the photographs of the MNIST-M-style blends) import tensorflow
or other heavy things in their ``__init__``, so their folder is found with ``importlib.util.find_spec`` instead.
Both :mod:`transferkit.data.builtin` and :mod:`transferkit.data.shifted` read files this way; keeping the lookup
here lets builtin use shifted without shifted reaching back into builtin.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import DataError


def package_dir(module: str, pip_name: str, extra: str = "") -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        DataError: the package is not installed (the message gives the pip command).
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"The package '{pip_name}' is not installed; run: pip install {pip_name}{extra}.")
    return Path(list(spec.submodule_search_locations)[0])


def package_file(module: str, pip_name: str, rel: str, extra: str = "") -> Path:
    """The file ``rel`` inside an installed package.

    Raises:
        DataError: the package is not installed, or the file is missing from it.
    """
    p = package_dir(module, pip_name, extra) / rel
    if not p.is_file():
        raise DataError(f"File '{p}' is missing from the '{pip_name}' package; reinstall it with pip.")
    return p
