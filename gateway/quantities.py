"""Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): parse them exactly, scale and format them.

Follows the grammar of k8s.io/apimachinery's `resource.Quantity`: a signed decimal number, then a
binary suffix (Ki..Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent (e3, E-2).
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

# Exact arithmetic: the mantissa is capped at _MAX_NUMBER_CHARS digits and the largest multiplier
# (1024**6) has 19, so this precision never rounds.
_PRECISION = 120
_MAX_NUMBER_CHARS = 64
_MAX_EXPONENT = 64  # Kubernetes cannot store more than ~1e18 anyway; this only bounds the work

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

_EXPONENT = re.compile(r"[eE][+-]?[0-9]+")
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    # "E" alone is exa; "E" or "e" followed by digits is an exponent, as in Kubernetes.
    r"(?P<suffix>[KMGTPE]i|[eE][+-]?[0-9]+|[numkMGTPE])?"
)


def split_quantity(text: str) -> tuple[Decimal, str]:
    """`"1.5Gi"` -> `(Decimal("1.5"), "Gi")`. Raises ValueError when `text` is not a quantity."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{str(text)[:100]!r} is not a Kubernetes quantity (e.g. 500m, 1.5, 2Gi, 512Mi)")
    number, suffix = match["number"], match["suffix"] or ""
    if len(number) > _MAX_NUMBER_CHARS:
        raise ValueError(f"{text!r} has too many digits")
    exponent = _exponent(suffix)
    if exponent is not None and abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"{text!r} is out of range")
    return Decimal(number), suffix


def multiplier(suffix: str) -> Decimal:
    """What one unit of `suffix` is worth: `"Ki"` -> 1024, `"m"` -> 0.001, `"e3"` -> 1000."""
    if suffix in _BINARY:
        return Decimal(1024 ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return Decimal(1).scaleb(_DECIMAL[suffix])
    exponent = _exponent(suffix)
    if exponent is not None:
        return Decimal(1).scaleb(exponent)
    raise ValueError(f"{suffix!r} is not a quantity suffix")


def _exponent(suffix: str) -> int | None:
    """The power of ten of an exponent suffix (`"e3"` -> 3), or None for any other suffix."""
    return int(suffix[1:]) if _EXPONENT.fullmatch(suffix) else None


def parse_quantity(text: str) -> Decimal:
    """The exact value of a quantity in base units (cores, bytes): `"500m"` -> `Decimal("0.5")`."""
    number, suffix = split_quantity(text)
    with localcontext(prec=_PRECISION):
        return number * multiplier(suffix)


def format_quantity(number: Decimal, suffix: str = "") -> str:
    """The shortest plain text for `number` followed by `suffix`: `(Decimal("1.20"), "Gi")` -> `"1.2Gi"`."""
    if not number.is_finite():
        raise ValueError(f"{number} is not a finite number")
    with localcontext(prec=_PRECISION):
        text = format(number.normalize(), "f")  # "f" never uses an exponent: 1E+2 -> "100"
    multiplier(suffix)  # refuse to write a suffix we could not read back
    return text + suffix


def scale_quantity(text: str, factor: Decimal) -> str:
    """`text` times `factor`, kept in the unit it was written in: `("1.0Gi", 1.2)` -> `"1.2Gi"`."""
    number, suffix = split_quantity(text)
    with localcontext(prec=_PRECISION):
        return format_quantity(number * factor, suffix)
