"""User-facing errors: one line, names the problem and the fix, exit code 2."""

from __future__ import annotations

import dataclasses
import math
import os
import re

__all__ = ["UserError", "OutOfBudget", "Unreachable", "require_finite", "first_line", "as_config"]


class UserError(Exception):
    """A problem with the user's input. The CLI prints it on one line and exits with 2."""


class OutOfBudget(UserError):
    """A run stopped on its epoch budget before it finished; ``--resume`` with a larger
    ``--max-total-epochs`` continues it."""


class Unreachable(UserError):
    """A target beyond what the prunable layers can give (the message names the most)."""


def as_config(value, cls, name: str):
    """``value`` as a ``cls`` config dataclass, from itself or a dict of its fields (the
    Python API takes either); a path value becomes a string.

    Raises:
        UserError: another type, or a key ``cls`` has no field for (naming it).
    """
    if isinstance(value, dict):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise UserError(f"{name}: unknown setting {unknown[0]!r}; {cls.__name__} has "
                            f"{', '.join(names)}")
        value = cls(**value)
    if not isinstance(value, cls):
        raise UserError(f"{name} must be a {cls.__name__} or a dict of its fields, got "
                        f"{type(value).__name__}")
    paths = {f.name: str(v) for f in dataclasses.fields(value)
             if isinstance(v := getattr(value, f.name), os.PathLike)}
    return dataclasses.replace(value, **paths) if paths else value


def require_finite(config) -> None:
    """Refuse a NaN or infinite number anywhere in a config dataclass (nested ones and lists
    included), naming the option: ``--weight-decay inf`` must not train a NaN model."""
    for f in dataclasses.fields(config):
        _check(getattr(config, f.name), f.name)


def _check(value, name: str) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        require_finite(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check(v, name)
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type where the message is empty), cut
    to ``limit`` characters: for one-line errors that quote what went wrong."""
    lines = _ANSI.sub("", str(e)).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours (torch.export's messages carry them)
