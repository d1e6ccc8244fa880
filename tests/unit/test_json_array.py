"""The jupyter provider reads a listing element by element: it must accept exactly what
``json.loads`` accepts as an array, and fail (never truncate) on anything else."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.errors import MalformedResponse
from janitor.providers.jupyter import JsonArray

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, request=httpx.Request("GET", "http://nb/api/sessions"))


def _read(body: bytes) -> list[Any] | None:
    """The array's elements; None when JsonArray.of refuses the body."""
    array = JsonArray.of(_response(body), "nb")
    return None if array is None else list(array)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return MalformedResponse


@given(st.lists(json_values, max_size=6), st.sampled_from(["", " ", "\n  ", "\t\r\n"]))
def test_a_valid_array_reads_like_json_loads(values: list[Any], space: str) -> None:
    body = json.dumps(values, indent=len(space) or None).encode()
    assert _read(space.encode() + body + space.encode()) == values


@given(st.lists(json_values, min_size=1, max_size=4), st.data())
def test_a_cut_or_spoiled_array_fails_like_json_loads(values: list[Any], data: Any) -> None:
    body = json.dumps(values).encode()
    cut = data.draw(st.integers(min_value=1, max_value=len(body)))
    spoiled = data.draw(st.sampled_from([body[:cut], body[:cut] + b"x" + body[cut:]]))
    expected = _loads(spoiled)
    if isinstance(expected, list):
        assert _read(spoiled) == expected
        return
    try:
        got: Any = _read(spoiled)
    except MalformedResponse:
        got = MalformedResponse
    # not an array at all: of() refuses it (the provider then reports the body's type)
    assert got in (MalformedResponse, None)
    assert expected is MalformedResponse or not isinstance(expected, list)


@pytest.mark.parametrize(
    "body",
    [b"[1, 2] 3", b"[1, 2]]", b"[1 2]", b"[1,]", b"[,1]", b'[{"a": 1}', b"[", b"[1,"],
)
def test_malformed_arrays_fail_the_listing(body: bytes) -> None:
    with pytest.raises(MalformedResponse, match="body is not JSON"):
        _read(body)


@pytest.mark.parametrize("body", [b"", b"{}", b'"x"', b"null", b"\xff\xfe\xfd", b"  {"])
def test_a_body_that_is_no_array_is_refused(body: bytes) -> None:
    assert JsonArray.of(_response(body), "nb") is None


def test_the_empty_array() -> None:
    assert _read(b" [ ] ") == []
