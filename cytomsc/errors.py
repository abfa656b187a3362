"""The one error type users see.

Everything that can go wrong with a user's input (a file, a panel, a manifest, an option) is raised
as ``CytomscError`` with a one-line message that names the file and the reason. The CLI prints the
message and sets the exit status; it never shows a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path


class CytomscError(Exception):
    """A user-facing error: ``path`` (optional) and a one-line ``reason``."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = " ".join(str(reason).split())  # one line, always
        self.path = str(path) if path is not None else None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class FcsReadError(CytomscError):
    """An FCS file that cannot be read (not FCS, truncated, inconsistent)."""


class PanelError(CytomscError):
    """A panel file that is malformed, or markers that cannot be matched unambiguously."""


class LayoutError(CytomscError):
    """A manifest or folder layout that does not describe cultures and tubes."""


def one_line(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\x00``, ``\\u2028``...).

    Folder names, file names and FCS keywords may hold a newline or a NUL; printed raw they
    split a one-line error in two, or a row of summary.csv. Escaped, they stay visible and the
    line stays one line."""
    if not isinstance(text, str):
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text
    )


def _escape(ch: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if ch in named:
        return named[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
