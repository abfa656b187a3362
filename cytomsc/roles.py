"""A tube's role within its culture: what it is for, typed, and written as labs write it.

A role is the stained tube, an isotype or unstained control, the FMO control of one marker, or a
single-stain compensation control of one dye or detector. It is written ``stained``,
``isotype``, ``unstained``, ``fmo:CD73`` and ``single:FITC`` in manifests, in ``summary.json``
and on the reports, so ``Role`` *is* that text (a ``str``: it compares, hashes, pickles and
serializes as the text), and gives the parts by name (``kind``, ``target``) so that no code
slices ``"fmo:CD73"`` apart.
"""

from __future__ import annotations

from typing import Literal, cast

__all__ = ["Role", "RoleKind", "ROLE_KINDS"]

RoleKind = Literal["stained", "isotype", "unstained", "fmo", "single"]
ROLE_KINDS: tuple[RoleKind, ...] = ("stained", "isotype", "unstained", "fmo", "single")
_TARGETED = ("fmo", "single")  # kinds that name what they control for


class Role(str):
    """``Role("fmo:CD73").kind == "fmo"``, ``.target == "CD73"``; ``Role("isotype").target``
    is ``""``. Any other text is a ``ValueError``."""

    __slots__ = ()

    def __new__(cls, text: str) -> Role:
        kind, sep, target = str(text).partition(":")
        if kind not in ROLE_KINDS or (kind in _TARGETED) != bool(sep and target):
            raise ValueError(f"not a tube role: {text!r}")
        return super().__new__(cls, text)

    @classmethod
    def fmo(cls, marker: str) -> Role:
        """The FMO control of ``marker`` (fluorescence minus that one)."""
        return cls(f"fmo:{marker}")

    @classmethod
    def single(cls, target: str) -> Role:
        """A single-stain compensation control of a dye or detector."""
        return cls(f"single:{target}")

    @property
    def kind(self) -> RoleKind:
        return cast(RoleKind, self.partition(":")[0])

    @property
    def target(self) -> str:
        """The FMO's marker or the single stain's dye or detector; "" for the other kinds."""
        return self.partition(":")[2]

    def controls_for(self, markers: tuple[str, ...]) -> bool:
        """An FMO control of one of ``markers``."""
        return self.kind == "fmo" and self.target in markers
