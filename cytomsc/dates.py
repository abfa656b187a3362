"""Acquisition dates as ISO 8601 (YYYY-MM-DD), whatever form the instrument wrote.

FCS 3.x prescribes ``$DATE`` as dd-mmm-yyyy ("15-JAN-2025"), FCS 2.0 as dd-mmm-yy, and exporters
write other forms too (2013-Jul-19, 07/19/2013, 19.07.2013). A QC record must read one way, and a
day-month order that cannot be told (03/04/2021) must not be guessed: such a date, or one in no
known form, is kept as written.
"""

from __future__ import annotations

import re
from datetime import date, datetime

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_FORMS = (
    (re.compile(r"^(\d{1,2})[-/ ]([A-Za-z]{3})[A-Za-z]*[-/ ](\d{2}|\d{4})$"), ("d", "b", "y")),
    (re.compile(r"^(\d{4})[-/ ]([A-Za-z]{3})[A-Za-z]*[-/ ](\d{1,2})$"), ("y", "b", "d")),
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), ("y", "m", "d")),
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), ("y", "m", "d")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), ("d", "m", "y")),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$"), ("md?", "dm?", "y")),
)


def iso_date(text: str | None) -> str:
    """``text`` as YYYY-MM-DD when its form is known and unambiguous, else as written."""
    if not text:
        return ""
    raw = str(text).strip()
    for pattern, order in _FORMS:
        m = pattern.match(raw)
        if not m:
            continue
        parts = dict(zip(order, m.groups(), strict=True))
        if "md?" in parts:  # US or European order: only when the numbers decide it
            a, b = int(parts["md?"]), int(parts["dm?"])
            if a > 12 >= b:
                parts = {"d": str(a), "m": str(b), "y": parts["y"]}
            elif b > 12 >= a:
                parts = {"m": str(a), "d": str(b), "y": parts["y"]}
            else:
                return raw
        year = int(parts["y"])
        if year < 100:
            year += 2000 if year < 70 else 1900
        month = _MONTHS.get(parts["b"].upper()[:3]) if "b" in parts else int(parts["m"])
        if month is None:
            return raw
        try:
            return date(year, month, int(parts["d"])).isoformat()
        except ValueError:
            return raw
    try:  # already ISO 8601, possibly with a time
        return datetime.fromisoformat(raw).date().isoformat() if "T" in raw else raw
    except ValueError:
        return raw
