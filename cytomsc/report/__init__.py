"""PDF reports: one per culture (``write_culture_pdf``) and one for the batch (``write_overview``).

The reports draw the result values the analysis returned and never recompute a number, so they
agree with ``summary.json``. matplotlib is only imported when a report is written.
"""

from .overview import write_overview
from .pdf import write_culture_pdf

__all__ = ["write_culture_pdf", "write_overview"]
