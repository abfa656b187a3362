"""cytomsc: flow cytometry QC of mesenchymal stromal cells.

The public API is what ``__all__`` lists; every other module is the package's own and may change:

- ``analyze(inputs, panel=..., **options) -> BatchResult`` analyses a batch and writes nothing;
  ``write(result, out)`` writes its files as ``cytomsc analyze`` does;
- ``BatchResult`` (``.cultures``, ``.errors``, ``markers_frame()``, ``cultures_frame()``,
  ``populations_frame()``) and ``CultureResult``;
- ``read_fcs`` (any FCS export), ``load_panel`` (a shipped panel id or a TOML file) and
  ``PopulationFinder`` (the clustering, a scikit-learn-style estimator);
- ``CytomscError``, the one error a bad input raises.

The names are imported on first use, so that ``import cytomsc`` (and ``cytomsc --help``) stays
fast: FlowKit, matplotlib and scikit-learn load only with the stages that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CytomscError

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "CultureResult",
    "CytomscError",
    "PopulationFinder",
    "__version__",
    "analyze",
    "load_panel",
    "read_fcs",
    "write",
]

_HOME = {
    "analyze": ".api",
    "write": ".api",
    "BatchResult": ".results",
    "CultureResult": ".results",
    "read_fcs": ".fcs",
    "load_panel": ".panel",
    "PopulationFinder": ".populations",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import analyze, write
    from .fcs import read_fcs
    from .panel import load_panel
    from .populations import PopulationFinder
    from .results import BatchResult, CultureResult


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'cytomsc' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
