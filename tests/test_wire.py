"""The typed JSON a running service answers in: every value comes back as the driver gave it."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.watch import wire

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**130), max_value=2**130),  # HUGEINT and beyond
    st.floats(allow_nan=False),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.binary(),
    st.uuids(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(VALUES)
def test_every_value_survives_the_round_trip(value: Any) -> None:
    """decode(json(encode(v))) == v, with its type, for every type a driver returns."""
    back = wire.decode(json.loads(json.dumps(wire.encode(value))))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_floats_json_cannot_hold_are_tagged(value: float) -> None:
    """NaN and infinities are valid JSON only as tagged strings, and come back as floats."""
    text = json.dumps(wire.encode(value), allow_nan=False)
    back = wire.decode(json.loads(text))
    assert isinstance(back, float) and repr(back) == repr(value)


def test_rows_keep_column_names_and_types() -> None:
    """A result's rows come back as tuples of the same typed values."""
    rows = [(1, Decimal("10.17"), dt.datetime(2026, 1, 2, 3, 4, 5, 678000), None, uuid.UUID(int=5))]
    columns, back = wire.decode_rows(json.loads(json.dumps(wire.encode_rows(["a", "b"], rows))))
    assert columns == ["a", "b"] and back == rows


def test_a_dict_that_is_not_a_tag_is_refused() -> None:
    """An untagged object is not a value this encoding makes: refused, never guessed at."""
    with pytest.raises(ValueError, match="not a tagged value"):
        wire.decode({"a": 1, "b": 2})
    with pytest.raises(ValueError, match="unknown value type"):
        wire.decode({"$nope": 1})
