"""Import a user's `nn.Module` from `MODULE:FACTORY`, for `pollen model from-torch`.

MODULE is a dotted module name importable from the working directory, or a path to a `.py`
file; FACTORY is a class or function in it, called without arguments.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn


def load_user_module(ref: str) -> nn.Module:
    """The module that `ref` (`MODULE:FACTORY`) makes; `ValueError` saying what went wrong."""
    where, sep, factory = ref.rpartition(":")
    if not sep or not where or not factory.isidentifier():
        raise ValueError(f"{ref!r} is not MODULE:FACTORY (for example my_models:Net or models/net.py:make)")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"{where}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"{where}: cannot be imported")
        source = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = source
        spec.loader.exec_module(source)
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            source = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"cannot import {where}: {e}") from None
    make = getattr(source, factory, None)
    if not callable(make):
        raise ValueError(f"{where} has no class or function {factory}")
    made = make()
    if not isinstance(made, nn.Module):
        raise ValueError(f"{ref}() made a {type(made).__name__}, not a torch.nn.Module")
    return made
