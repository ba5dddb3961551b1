"""Damage checks for files written by ``torch.save``.

``torch.save`` writes a zip archive and records a CRC-32 for every member (the tensors'
bytes among them), but ``torch.load`` does not compare them: a checkpoint or model file with
flipped bytes in a tensor loads silently as another network. :func:`damaged_member` reads
the archive with :mod:`zipfile` and compares every member with its recorded CRC-32 first.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

__all__ = ["damaged_member"]


def damaged_member(path: str | Path) -> str | None:
    """The first member of a ``torch.save`` archive whose bytes do not match its recorded
    CRC-32, or None when all match.

    None also where there is nothing to compare: a file that is not a zip archive (the
    legacy format, or one too damaged to open, which ``torch.load`` then refuses itself),
    one saved without checksums (``compute_crc32`` off: every CRC-32 is zero), or one that
    cannot be read (missing, a folder: ``torch.load``'s error says so).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not any(i.CRC for i in infos if i.file_size):
                return None
            return zf.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, OSError):
        return None  # torch.load, which the caller runs next, reports what is wrong
