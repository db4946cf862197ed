"""Kubernetes quantity parsing: the forms Kubernetes accepts, the ones it refuses, and round trips."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.quantities import format_quantity, parse_quantity, scale_quantity, split_quantity

SUFFIXES = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e3", "E-2", "e+6"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.0Gi", Decimal(1024**3)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1Ki", Decimal(1024)),
        ("2Ei", Decimal(2 * 1024**6)),
        ("1k", Decimal(1000)),
        ("1G", Decimal(10**9)),
        ("1E", Decimal(10**18)),  # "E" alone is exa ...
        ("1E3", Decimal(1000)),  # ... and followed by digits an exponent
        ("1e3", Decimal(1000)),
        ("15e-1", Decimal("1.5")),
        ("100n", Decimal("0.0000001")),
        ("3u", Decimal("0.000003")),
        ("+1", Decimal(1)),
        ("-2Mi", Decimal(-2 * 1024**2)),
    ],
)
def test_parses_every_kubernetes_form_exactly(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "abc", "1.0Gx", "1 Gi", " 1", "1gi", "1ki", "1K", "nan", "inf", "1e", "0x10", "1..0", "Gi", "1Gi2"]
)
def test_refuses_what_kubernetes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_refuses_absurd_sizes_instead_of_computing_them() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_quantity("1e999999999")
    with pytest.raises(ValueError, match="too many digits"):
        parse_quantity("1" * 100)


def test_scaling_keeps_the_unit_the_user_wrote() -> None:
    assert scale_quantity("1.0Gi", Decimal("1.2")) == "1.2Gi"
    assert scale_quantity("500m", Decimal("1.2")) == "600m"
    assert scale_quantity("0.5", Decimal("1.2")) == "0.6"
    assert scale_quantity("2", Decimal("1.5")) == "3"


@given(
    number=st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12),
    suffix=st.sampled_from(SUFFIXES),
)
def test_formatting_then_parsing_round_trips(number: Decimal, suffix: str) -> None:
    text = format_quantity(number, suffix)
    assert split_quantity(text) == (number, suffix)
    assert parse_quantity(text) == parse_quantity(format(number, "f") + suffix)


@given(text=st.text(alphabet="0123456789.+-eEkKMGTPinum ", max_size=12))
def test_any_accepted_text_reads_back_to_the_same_value(text: str) -> None:
    try:
        number, suffix = split_quantity(text)
    except ValueError:
        return  # refused: fine, as long as it is a ValueError and nothing else
    assert parse_quantity(format_quantity(number, suffix)) == parse_quantity(text)
