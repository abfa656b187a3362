"""PDF reports: one per culture (``write_culture_pdf``) and one for the batch (``write_overview``).

The reports draw the result values the analysis returned and never recompute a number, so they
agree with ``summary.json``. matplotlib is only imported when a report is written.
"""

import os
import sys
import tempfile


def _private_matplotlib_dir() -> None:
    """Point matplotlib's config and font cache at a folder of cytomsc's own in the temporary
    folder, before matplotlib is imported: it would otherwise write into the user's home
    (~/.cache/matplotlib), and read a matplotlibrc there that could change the reports.

    The folder is kept between runs (building the font cache takes a second); it must be a real
    folder owned by this user and closed to others, or a fresh one is made for this process.
    An MPLCONFIGDIR the user set is theirs, and kept."""
    if "MPLCONFIGDIR" in os.environ or "matplotlib" in sys.modules:
        return
    path = os.path.join(tempfile.gettempdir(), f"cytomsc-matplotlib-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if (
            st.st_uid != os.getuid()
            or st.st_mode & 0o077
            or not os.path.isdir(path)
            or os.path.islink(path)
        ):
            raise PermissionError(path)
    except OSError:
        path = tempfile.mkdtemp(prefix="cytomsc-matplotlib-")
    os.environ["MPLCONFIGDIR"] = path


_private_matplotlib_dir()

from .overview import write_overview  # noqa: E402 - after the matplotlib folder is chosen
from .pdf import write_culture_pdf  # noqa: E402

__all__ = ["write_culture_pdf", "write_overview"]
