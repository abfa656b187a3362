"""What kind of channel is this? Scatter, time, viability dye, bookkeeping or fluorescence, by name.

Cytometers name the same thing many ways: BD Diva ``FSC-A``/``FSC-H``/``FSC-W``, Accuri and
FACSCalibur ``FSC-H``/``FL1-H``, CytoFLEX ``FITC-A``, Attune ``BL1-A``, MACSQuant ``B1-A`` and
``HDR-T`` for time, Beckman ``FS INT``/``FS PEAK``/``FS TOF`` (area/height/width) and ``FS Lin``,
Guava ``FSC-HLin``, Partec ``FSC``, Cytek xP ``FSC``/``FSCA``/``FSCW``. Gating needs to know which
channel is forward-scatter area or height whatever the instrument, so this module classifies names
once, and every later stage asks it rather than hard-coding ``"FSC-A"``.

``$PnN`` is read first (it is the instrument's detector name); ``$PnS`` is only a fall-back for
scatter/time because labs write free text there. Names are compared upper-cased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Fluorochromes and fluorescent proteins as written in $PnS/$PnN. Stripped before marker matching so
# that "CD90 FITC", "CD103-FITC", "PerCP-Cy5.5 CD105" leave only the marker. Longest first matters
# ("PE-Cy7" before "PE"), which strip_fluorochromes() takes care of.
FLUOROCHROME_WORDS: frozenset[str] = frozenset(
    {
        "FITC",
        "PE",
        "APC",
        "PerCP",
        "PerCP-Cy5.5",
        "PerCP-Cy5-5",
        "PerCP-Cy55",
        "PerCP-eFluor 710",
        "PerCP-Vio700",
        "PE-Cy5",
        "PE-Cy5.5",
        "PE-Cy5-5",
        "PE-Cy7",
        "PE-Texas Red",
        "PE-TxRed",
        "PE-TR",
        "ECD",
        "PE-CF594",
        "PE-Dazzle 594",
        "PE-Dazzle594",
        "PE-Vio770",
        "PE-Vio615",
        "PE-eFluor 610",
        "PC5",
        "PC5.5",
        "PC7",
        "APC-Cy7",
        "APC-H7",
        "APC-Fire 750",
        "APC-Fire750",
        "APC-R700",
        "APC-eFluor 780",
        "APC-Vio770",
        "APC-Alexa Fluor 750",
        "Cy3",
        "Cy5",
        "Cy5.5",
        "Cy7",
        "Alexa Fluor 350",
        "Alexa Fluor 405",
        "Alexa Fluor 430",
        "Alexa Fluor 488",
        "Alexa Fluor 532",
        "Alexa Fluor 546",
        "Alexa Fluor 555",
        "Alexa Fluor 568",
        "Alexa Fluor 594",
        "Alexa Fluor 610",
        "Alexa Fluor 633",
        "Alexa Fluor 647",
        "Alexa Fluor 660",
        "Alexa Fluor 680",
        "Alexa Fluor 700",
        "Alexa Fluor 750",
        "Alexa 488",
        "Alexa 647",
        "Alexa700",
        "AF350",
        "AF405",
        "AF430",
        "AF488",
        "AF532",
        "AF555",
        "AF594",
        "AF647",
        "AF700",
        "AF750",
        "Ax488",
        "Ax647",
        "Ax700",
        "Ax750",
        "BV395",
        "BV421",
        "BV480",
        "BV510",
        "BV570",
        "BV605",
        "BV650",
        "BV711",
        "BV750",
        "BV785",
        "BV786",
        "BUV395",
        "BUV496",
        "BUV563",
        "BUV615",
        "BUV661",
        "BUV737",
        "BUV805",
        "BB515",
        "BB700",
        "BYG584",
        "RB545",
        "RB780",
        "R718",
        "V450",
        "V500",
        "Pacific Blue",
        "PacificBlue",
        "PacBlu",
        "Pacific Orange",
        "PacificOrange",
        "PacOrange",
        "AmCyan",
        "eFluor 450",
        "eFluor 506",
        "eFluor 660",
        "eFluor 710",
        "eFluor 780",
        "eF450",
        "eF506",
        "eF660",
        "eF780",
        "Super Bright 436",
        "Super Bright 600",
        "Super Bright 645",
        "Super Bright 702",
        "SB436",
        "SB600",
        "SB645",
        "SB702",
        "Krome Orange",
        "KO",
        "KO525",
        "Pacific Blue-A",
        "VioBlue",
        "VioGreen",
        "Vio515",
        "Vio667",
        "VioBright FITC",
        "VioBright 515",
        "NovaFluor Blue 530",
        "Spark Blue 550",
        "Spark NIR 685",
        "Qdot 525",
        "Qdot 605",
        "Qdot 655",
        "Qdot 705",
        "Qdot525",
        "Qdot605",
        "Qdot655",
        "Qdot705",
        "GFP",
        "EGFP",
        "YFP",
        "CFP",
        "mCherry",
        "RFP",
        "tdTomato",
        "DyLight 488",
        "DyLight 649",
        "CF405",
        "CF488",
        "CF647",
        "iFluor 488",
        "PE-Alexa Fluor 610",
        "Texas Red",
        "TxRed",
    }
)

# Viability dyes, compared on upper-cased text with spaces/hyphens/underscores removed.
_VIABILITY_SQUASHED = (
    "7AAD",
    "DAPI",
    "PROPIDIUM",
    "LIVEDEAD",
    "LIVE/DEAD",
    "ZOMBIE",
    "FIXABLEVIABILITY",
    "VIABILITY",
    "VIABLE",
    "SYTOX",
    "DRAQ7",
    "TOPRO3",
    "VIVID",
    "EFLUOR780FIXABLE",
    "FVD",
    "FVS",
)
# ... and as whole tokens only (too short to search inside words).
_VIABILITY_TOKENS = frozenset({"PI", "L/D", "LD", "VIAB", "DEAD", "LIVE"})

# Bookkeeping channels: event counters, sort results, MACSQuant header channels, our own gate flags.
_BOOKKEEPING = re.compile(
    r"^(CYTOMSC_.*|EVENT.*|EVENTS?\s*(COUNT|NO|#|NUMBER)?|SORT.*|INDEX.*|WELL.*|PLATE.*|"
    r"HDR-(?!T$).*|DOUBLET|ORIGINAL[_\s]?ID|SAMPLE[_\s]?ID|BEAD.*|FILE.*|TIME[_\s]?(LSW|MSW))$"
)
_TIME = re.compile(r"^(TIME|HDR-T|CLOCK)(?=$|[\s\-_.(:]).*$")
_SEP = r"[\s\-_./()]+"
_FLUORO_RE: re.Pattern[str] | None = None


@dataclass(frozen=True)
class ScatterChannels:
    """The scatter and time channels of one file ($PnN), each None when the instrument lacks it."""

    fsc_a: str | None
    fsc_h: str | None
    fsc_w: str | None
    ssc_a: str | None
    ssc_h: str | None
    time: str | None
    ssc_w: str | None = None

    @property
    def fsc(self) -> str | None:
        """The forward-scatter channel for a cells gate: area when present, else height."""
        return self.fsc_a or self.fsc_h

    @property
    def ssc(self) -> str | None:
        """The side-scatter channel for a cells gate: area when present, else height."""
        return self.ssc_a or self.ssc_h


def _scatter(name: str) -> tuple[str, str, int] | None:
    """("FSC"|"SSC", "A"|"H"|"W"|"", rank) for a scatter name, else None. Lower rank is better.

    "" means the name does not say area or height (Partec "FSC", Beckman "FS Lin"). The rank prefers
    linear over log and plain detectors over secondary ones (Aria "FSC PMT-A", Aurora "SSC-B-A").
    """
    n = name.strip().upper()
    m = re.match(r"^(FSC|SSC|FORWARD SCATTER|SIDE SCATTER)(.*)$", n) or re.match(
        r"^(FS|SS)(?=$|[\s\-_.(])(.*)$", n
    )
    if not m:
        return None
    family = "FSC" if m.group(1).startswith("F") else "SSC"
    rest = m.group(2)
    if rest and not re.match(r"^([\s\-_.(]|[AHW](LIN|LOG)?$)", rest):
        return None
    kind, rank = "", 0
    for tok in (t for t in re.split(_SEP, rest) if t):
        if tok in ("A", "AREA", "INT", "INTEGRAL", "ALIN", "ALOG"):
            kind = kind or "A"
        elif tok in ("H", "HEIGHT", "PEAK", "PK", "HLIN", "HLOG"):
            kind = kind or "H"
        elif tok in ("W", "WIDTH", "TOF", "WLIN", "WLOG"):
            kind = kind or "W"
        elif tok == "LIN":
            pass
        elif tok == "LOG":
            rank += 2
        else:
            rank += 4  # PMT, B, channel numbers ...
        if tok.endswith("LOG") and tok != "LOG":
            rank += 2
    return family, kind, rank


def is_scatter(pnn: str, pns: str = "") -> bool:
    """True for forward/side scatter channels (by $PnN, or $PnS when $PnN says nothing)."""
    return _scatter(pnn) is not None


def scatter_family(pnn: str) -> str | None:
    """ "FSC" or "SSC" for a scatter channel in any instrument's spelling ("FSC-A", Beckman
    "FS INT", "Side Scatter"), else None."""
    got = _scatter(pnn)
    return got[0] if got else None


def is_time(pnn: str, pns: str = "") -> bool:
    """True for the acquisition clock ("Time", "TIME", MACSQuant "HDR-T")."""
    n = pnn.strip().upper()
    if _BOOKKEEPING.match(n) and not n.startswith("HDR-T"):
        return False
    return bool(_TIME.match(n)) or (not n and bool(_TIME.match(pns.strip().upper())))


def is_bookkeeping(pnn: str, pns: str = "") -> bool:
    """Event counters, sort/index fields, instrument header channels and ``cytomsc_*`` flags."""
    return bool(_BOOKKEEPING.match(pnn.strip().upper()))


def is_fluorescence(pnn: str, pns: str) -> bool:
    """A detector channel that can carry a marker: not scatter, time or bookkeeping."""
    return not (is_scatter(pnn, pns) or is_time(pnn, pns) or is_bookkeeping(pnn, pns))


def _pairs(pnn: list[str], pns: list[str]) -> list[tuple[str, str]]:
    """($PnN, $PnS) pairs; a missing or None $PnS is ""."""
    labels = [s or "" for s in pns][: len(pnn)]
    labels += [""] * (len(pnn) - len(labels))
    return list(zip(pnn, labels, strict=True))


def find_scatter(pnn: list[str], pns: list[str]) -> ScatterChannels:
    """Classify a file's channels into FSC/SSC area/height/width and time ($PnN names returned).

    A name that does not say area or height (Partec "FSC", Cytek xP "FSC" beside "FSCA") fills the
    area slot when the file has no explicit area channel, else the height slot: Cytek's plain
    "FSC" is the peak signal whose integral is "FSCA".
    """
    pairs = _pairs(pnn, pns)
    best: dict[tuple[str, str], tuple[int, int, str]] = {}
    for i, (n, _) in enumerate(pairs):
        got = _scatter(n)  # $PnS is free text: scatter comes from $PnN alone
        if got is None:
            continue
        family, kind, rank = got
        key = (family, kind)
        if key not in best or (rank, i) < best[key][:2]:
            best[key] = (rank, i, n)
    slots: dict[str, str | None] = {}
    for family in ("FSC", "SSC"):
        a = best.get((family, "A"))
        h = best.get((family, "H"))
        w = best.get((family, "W"))
        bare = best.get((family, ""))
        if bare is not None:
            if a is None:
                a = bare
            elif h is None:
                h = bare
        slots[family + "A"] = a[2] if a else None
        slots[family + "H"] = h[2] if h else None
        slots[family + "W"] = w[2] if w else None
    times = [n for n, s in pairs if is_time(n, s)]
    # the plain "Time" wins over other clock-like names
    time = next((n for n in times if n.strip().upper() == "TIME"), times[0] if times else None)
    if time is None:  # MACSQuant FCS 3.1 may keep "HDR-T" only in $PnS
        for n, s in pairs:
            if s.strip().upper() == "HDR-T" and not is_scatter(n):
                time = n
                break
    return ScatterChannels(
        fsc_a=slots["FSCA"],
        fsc_h=slots["FSCH"],
        fsc_w=slots["FSCW"],
        ssc_a=slots["SSCA"],
        ssc_h=slots["SSCH"],
        time=time,
        ssc_w=slots["SSCW"],
    )


def _fluoro_re() -> re.Pattern[str]:
    global _FLUORO_RE
    if _FLUORO_RE is None:
        words = sorted(FLUOROCHROME_WORDS, key=len, reverse=True)
        alts = []
        for w in words:
            parts = [re.escape(p) for p in re.split(r"[\s\-_.]+", w.upper()) if p]
            alts.append(r"[\s\-_.]?".join(parts))
        _FLUORO_RE = re.compile(r"(?<![A-Z0-9])(" + "|".join(alts) + r")(?![A-Z0-9])")
    return _FLUORO_RE


# Detector names, optionally with an amplification/measure suffix ("FL1 Log", "BL1-A", "B515-A",
# "BL 530/30-A", "V2-A", "FL2-Height"), and filter specifications ("530/30@488/B").
_DETECTOR = re.compile(
    r"(?<![A-Z0-9])(FL\d+|[BVRYUG]L?\d{1,3}|[BVRYUG]\d{3}|BL|YL|RL|VL|UVL?|"
    r"FSC|SSC|FS|SS|\d{3}/\d{1,3}(@\d{3})?(/[A-Z])?|@\d{3}(/[A-Z])?)"
    r"([\s\-_]*(INT|PEAK|TOF|LIN|LOG|AREA|HEIGHT|WIDTH|A|H|W)(?![A-Z0-9]))*"
)


def strip_fluorochromes(text: str) -> str:
    """$PnS without fluorochrome words, filter specs and the "-A/-H/-W" suffix, upper-cased.

    "CD90 FITC-A" -> "CD90"; "PerCP-Cy5.5 CD105" -> "CD105"; "CD21;FITC;530/30@488/B" -> "CD21";
    "IgG1 FITC" -> "IGG1". Separators left at the ends are trimmed.
    """
    t = _fluoro_re().sub(" ", text.upper())
    t = re.sub(r"(?<![A-Z0-9])\d{3}/\d{1,3}(@\d{3})?(/[A-Z])?(?![A-Z0-9])", " ", t)
    t = re.sub(r"(?<![A-Z0-9])[AHW](?![A-Z0-9])", " ", t)
    return re.sub(r"\s+", " ", re.sub(r"[\s;,:|\-_]+", " ", t)).strip(" /-_.;,")


def is_blank_label(pnn: str, pns: str) -> bool:
    """True when $PnS says nothing beyond a detector, fluorochrome or scatter/time name.

    Many exports copy $PnN into $PnS ("FSC-A", "V2-A", "FL1 Log", "FL1-Height"); such a $PnS names
    no marker, so the matcher falls back to $PnN and the user's channel map.
    """
    s = pns.strip()
    if not s or s.upper() == pnn.strip().upper():
        return True
    rest = _DETECTOR.sub(" ", strip_fluorochromes(s))
    rest = re.sub(r"(?<![A-Z0-9])(TIME|HDR-?T|SEC|HEIGHT|AREA|WIDTH)(?![A-Z0-9])", " ", rest)
    return not re.sub(r"[^A-Z]", "", rest)


def _viability_text(text: str) -> bool:
    up = text.upper()
    squashed = re.sub(r"[\s\-_.]", "", up)
    if any(w in squashed for w in _VIABILITY_SQUASHED):
        return True
    tokens = {t for t in re.split(r"[\s\-_.;,:()|]+", up) if t}
    return bool(tokens & _VIABILITY_TOKENS) or "L/D" in up.replace(" ", "")


_CD = re.compile(r"(?<![A-Z0-9])CD\s?-?\d+", re.I)


def find_viability(pnn: list[str], pns: list[str]) -> str | None:
    """The viability-dye channel ($PnN), or None.

    By $PnS first ("7-AAD", "Live/Dead Aqua", "viability;7-AAD;695/40@488/A", "FVS780", "PI"), then
    by $PnN only when $PnS is blank and $PnN names the dye ("7-AAD-A", "DAPI-A"): a $PnN like
    "DAPI-A" is sometimes just the violet detector's name while $PnS holds a marker. A dump channel
    that also names a CD marker ("ViViD / CD14") is not returned: gating on it as "live" would
    remove the marker's positive cells too.
    """
    for n, s in _pairs(pnn, pns):
        if not is_fluorescence(n, s):
            continue
        blank = is_blank_label(n, s)
        text = n if blank else s
        if _viability_text(text) and not _CD.search(text):
            return n
    return None
