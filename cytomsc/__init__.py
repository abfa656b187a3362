"""cytomsc: flow cytometry QC of mesenchymal stromal cells.

The public API is small on purpose; heavy modules (FlowKit, matplotlib, scikit-learn) are imported
lazily by the stages that need them so that ``cytomsc --help`` stays fast.
"""

__version__ = "0.1.0"

from .errors import CytomscError

__all__ = ["CytomscError", "__version__"]
