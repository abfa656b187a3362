"""``python -m cytomsc``: the same as the ``cytomsc`` command (for environments without the
script on PATH)."""

from cytomsc.cli import entry

if __name__ == "__main__":
    entry()
