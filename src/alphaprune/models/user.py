"""User models: ``--model FILE.py:FACTORY`` or ``--model package.module:FACTORY``.

The factory is called with ``--model-kwargs`` (a JSON object) and must return an
``nn.Module``. Naming a file or module here runs *your* code, on purpose: it is how your
architecture is built. Files alphaprune writes never need that code again: a user model is
saved as its traced graph (:mod:`alphaprune.graph.serialize`) and rebuilt from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import torch.nn as nn

from alphaprune.errors import UserError, first_line

__all__ = ["is_user_spec", "build_user_model", "parse_model_kwargs", "GRAPH_ARCH"]

GRAPH_ARCH = "graph"  # the arch of a model file that stores its own graph


def is_user_spec(spec: str | None) -> bool:
    """True for ``FILE.py:FACTORY`` and ``package.module:FACTORY``."""
    return bool(spec) and ":" in spec


def parse_model_kwargs(text: str | None) -> dict:
    """``--model-kwargs`` as a dict (``{}`` when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--model-kwargs is not JSON ({e.msg}): pass e.g. '{{\"num_classes\": 10}}'") from e
    if not isinstance(value, dict):
        raise UserError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return value


def _load_module(where: str):
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--model {where}: no such file; pass FILE.py:FACTORY")
        name = f"alphaprune_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            raise UserError(f"--model {where}: importing it failed ({type(e).__name__}: {e})") from e
        return module
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise UserError(f"--model {where}: cannot import it ({e}); pass FILE.py:FACTORY or an "
                        "importable package.module:FACTORY") from e
    except Exception as e:  # the module's own code failed (a SyntaxError, a raise)
        raise UserError(f"--model {where}: importing it failed ({type(e).__name__}: "
                        f"{first_line(e)})") from e


def build_user_model(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Call the factory named by ``spec`` with ``kwargs``.

    Raises:
        UserError: a missing file or module, a missing factory, a factory that fails or
        does not return an ``nn.Module``.
    """
    where, _, factory = spec.rpartition(":")
    if not where or not factory:
        raise UserError(f"--model {spec!r}: pass FILE.py:FACTORY or package.module:FACTORY")
    fn = getattr(_load_module(where), factory, None)
    if not callable(fn):
        raise UserError(f"--model {spec}: {where} has no callable {factory!r}")
    try:
        inspect.signature(fn).bind(**(kwargs or {}))
    except TypeError as e:
        raise UserError(f"--model {spec}: the factory refused --model-kwargs ({e})") from e
    except ValueError:  # a callable without a signature (a builtin): let the call say
        pass
    try:
        model = fn(**(kwargs or {}))
    except Exception as e:  # the user's code: one line, whatever it raised
        raise UserError(f"--model {spec}: the factory failed ({type(e).__name__}: "
                        f"{first_line(e)})") from e
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec}: the factory returned a {type(model).__name__}, not an nn.Module")
    return model
