"""janitor.providers.paging: every page or an error, duplicates across pages tolerated.

The fake servers below answer ``fetch`` the way the providers' APIs page: by token (Glue,
OCI), by limit/offset with a total (Fabric) and by page index until an empty page (ESS).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.errors import AuthFailed, MalformedResponse
from janitor.providers.paging import (
    Cursor,
    Page,
    collect,
    collect_offset,
    collect_until_empty,
)

Record = dict[str, Any]


def rec(record_id: str | None, version: int = 0) -> Record:
    """A raw record as an API sends it; ``version`` tells copies apart."""
    return {"id": record_id, "v": version}


def key(item: Any) -> str | None:
    """The providers' kind of key: the id, or None for a record without one."""
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


class TokenServer:
    """Pages by token: page ``i`` is asked with the cursor ``t{i}`` (the first with None)."""

    def __init__(self, pages: Sequence[Sequence[Record]], total: int | None = None) -> None:
        self.pages = [list(page) for page in pages]
        self.total = total
        self.asked: list[Cursor] = []

    async def __call__(self, cursor: Cursor) -> Page:
        self.asked.append(cursor)
        index = 0 if cursor is None else int(str(cursor)[1:])
        last = index == len(self.pages) - 1
        return Page(
            items=self.pages[index], next=None if last else f"t{index + 1}", total=self.total
        )


def run(fetch: Callable[[Cursor], Awaitable[Page]], *, max_pages: int = 10_000) -> list[Record]:
    """``collect`` driven without an event loop: the fakes never wait, and the property tests
    run it a few thousand times."""
    coroutine = collect(fetch, key=key, target="t1", what="sessions", max_pages=max_pages)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast("list[Record]", done.value)
    coroutine.close()
    raise AssertionError("a fake server waited")


def ids(records: list[Record]) -> list[str | None]:
    return [r["id"] for r in records]


# --- collect: following pages --------------------------------------------------------------


def test_one_page_is_the_listing() -> None:
    server = TokenServer([[rec("a"), rec("b")]])
    assert ids(run(server)) == ["a", "b"]
    assert server.asked == [None]


def test_every_page_is_followed_in_order() -> None:
    server = TokenServer([[rec("a")], [rec("b"), rec("c")], [], [rec("d")]])
    assert ids(run(server)) == ["a", "b", "c", "d"]
    assert server.asked == [None, "t1", "t2", "t3"]


def test_an_error_on_a_later_page_fails_the_listing() -> None:
    """Never a partial listing: the error of page 2 is the listing's error."""

    async def fetch(cursor: Cursor) -> Page:
        if cursor is None:
            return Page(items=[rec("a")], next="t1")
        raise AuthFailed("GET sessions: 401 credentials rejected", target="t1", status=401)

    with pytest.raises(AuthFailed):
        run(fetch)


# --- duplicates --------------------------------------------------------------------------------


def test_a_duplicate_across_pages_keeps_the_later_copy_at_the_first_position() -> None:
    server = TokenServer(
        [[rec("a", 1), rec("b", 1)], [rec("b", 2), rec("c", 2)], [rec("a", 3), rec("d", 3)]]
    )
    assert run(server) == [rec("a", 3), rec("b", 2), rec("c", 2), rec("d", 3)]


def test_a_duplicate_within_a_page_is_an_error_naming_the_id_and_the_page() -> None:
    server = TokenServer([[rec("a")], [rec("b"), rec("c"), rec("b")]])
    with pytest.raises(MalformedResponse) as caught:
        run(server)
    assert str(caught.value) == "listing sessions: page 2 has the id 'b' twice"
    assert caught.value.target == "t1"


def test_records_without_an_id_are_kept_and_never_deduplicated() -> None:
    server = TokenServer([[rec(None), rec("a"), rec(None)], [rec(None), {"name": "no id"}]])
    assert run(server) == [rec(None), rec("a"), rec(None), rec(None), {"name": "no id"}]


# --- totals ------------------------------------------------------------------------------------


def test_a_listing_shorter_than_the_reported_total_is_an_error() -> None:
    server = TokenServer([[rec("a"), rec("b")], [rec("c")]], total=4)
    with pytest.raises(MalformedResponse) as caught:
        run(server)
    assert str(caught.value) == (
        "listing sessions: 3 records in 2 pages, but the server reported a total of 4"
    )


def test_duplicates_do_not_count_towards_the_total() -> None:
    server = TokenServer([[rec("a"), rec("b")], [rec("b"), rec("c")]], total=4)
    with pytest.raises(MalformedResponse, match="3 records in 2 pages"):
        run(server)


@pytest.mark.parametrize("total", [0, 2, 3])
def test_a_listing_as_long_as_the_total_or_longer_is_complete(total: int) -> None:
    server = TokenServer([[rec("a"), rec("b")], [rec("c")]], total=total)
    assert ids(run(server)) == ["a", "b", "c"]


def test_the_largest_total_reported_counts() -> None:
    """A record deleted between pages shrinks the total and hides the one that moved up."""

    async def fetch(cursor: Cursor) -> Page:
        if cursor is None:
            return Page(items=[rec("a"), rec("b"), rec("c")], next="t1", total=6)
        return Page(items=[rec("e"), rec("f")], next=None, total=5)  # "a" deleted, "d" missed

    with pytest.raises(MalformedResponse, match="reported a total of 6"):
        run(fetch)


# --- listings that would not end ---------------------------------------------------------------


def test_a_cursor_that_comes_back_is_an_error_naming_it() -> None:
    asked: list[Cursor] = []

    async def fetch(cursor: Cursor) -> Page:  # ignores the token, always hands out the same
        asked.append(cursor)
        return Page(items=[rec(f"r{len(asked)}")], next="same-token")

    with pytest.raises(MalformedResponse) as caught:
        run(fetch)
    assert str(caught.value) == (
        "listing sessions: page 2 gives the cursor 'same-token', already used for page 2; "
        "the server does not advance"
    )
    assert asked == [None, "same-token"]


def test_a_cursor_from_several_pages_back_is_an_error_too() -> None:
    cursors = iter(["t1", "t2", "t1"])

    async def fetch(cursor: Cursor) -> Page:
        return Page(items=[rec(str(cursor))], next=next(cursors))

    with pytest.raises(MalformedResponse, match="cursor 't1', already used for page 2"):
        run(fetch)


def test_an_identical_page_under_a_new_cursor_is_an_error() -> None:
    count = 0

    async def fetch(cursor: Cursor) -> Page:  # a page index the server does not honour
        nonlocal count
        count += 1
        return Page(items=[rec("a"), rec("b")], next=count)

    with pytest.raises(MalformedResponse) as caught:
        run(fetch)
    assert str(caught.value) == (
        "listing sessions: page 2 repeats page 1 (2 records); the server ignores the cursor"
    )


def test_more_than_max_pages_is_an_error() -> None:
    asked: list[Cursor] = []

    async def fetch(cursor: Cursor) -> Page:
        asked.append(cursor)
        return Page(items=[rec(f"r{len(asked)}")], next=len(asked))

    with pytest.raises(MalformedResponse, match="still not done after 5 pages"):
        run(fetch, max_pages=5)
    assert len(asked) == 5


def test_exactly_max_pages_is_fine() -> None:
    server = TokenServer([[rec(f"r{i}")] for i in range(5)])
    assert len(run(server, max_pages=5)) == 5


def test_a_long_cursor_is_cut_in_the_message() -> None:
    token = "x" * 400_000  # Glue's NextToken may be this long

    async def fetch(cursor: Cursor) -> Page:
        return Page(items=[rec(str(len(str(cursor))))], next=token)

    with pytest.raises(MalformedResponse) as caught:
        run(fetch)
    assert len(str(caught.value)) < 200


# --- offset paging with a total (Fabric) -------------------------------------------------------


class OffsetServer:
    """``GET sessions?limit=&offset=`` with ``total``; ``cap`` makes some pages short."""

    def __init__(self, records: list[Record], limit: int, cap: Callable[[int], int] | None = None):
        self.records = records
        self.limit = limit
        self.cap = cap
        self.asked: list[int] = []

    async def __call__(self, offset: int) -> Page:
        self.asked.append(offset)
        size = self.cap(offset) if self.cap else self.limit
        items = self.records[offset : offset + size]
        return Page(items=items, next=None, total=len(self.records))


def run_offset(fetch: Callable[[int], Awaitable[Page]]) -> list[Record]:
    return asyncio.run(collect_offset(fetch, key=key, target="t1", what="sessions"))


def test_offset_paging_asks_from_each_new_offset_until_the_total() -> None:
    server = OffsetServer([rec(f"s{i}") for i in range(7)], limit=3)
    assert ids(run_offset(server)) == [f"s{i}" for i in range(7)]
    assert server.asked == [0, 3, 6]


def test_offset_paging_of_an_empty_listing_asks_once() -> None:
    server = OffsetServer([], limit=3)
    assert run_offset(server) == []
    assert server.asked == [0]


def test_a_short_page_before_the_total_is_not_the_end() -> None:
    server = OffsetServer([rec(f"s{i}") for i in range(7)], limit=3, cap=lambda o: 2 if o else 3)
    assert ids(run_offset(server)) == [f"s{i}" for i in range(7)]
    assert server.asked == [0, 3, 5]


def test_an_empty_page_before_the_total_is_an_error() -> None:
    server = OffsetServer([rec(f"s{i}") for i in range(7)], limit=3, cap=lambda o: 0 if o else 3)
    with pytest.raises(MalformedResponse) as caught:
        run_offset(server)
    assert str(caught.value) == (
        "listing sessions: empty page at offset 3, before the reported total of 7"
    )


def test_an_offset_page_without_a_total_is_an_error() -> None:
    async def fetch(offset: int) -> Page:
        return Page(items=[rec("a")], next=None)

    with pytest.raises(MalformedResponse, match="the page at offset 0 reports no total"):
        run_offset(fetch)


def test_offset_paging_under_churn_fails_when_a_record_is_missed() -> None:
    """A record inserted in front between two pages pushes "c" onto the next page too (a
    duplicate, tolerated) and is itself never seen: the new total fails the listing."""
    records = [rec(x, 1) for x in "abcdef"]
    server = OffsetServer(records, limit=3)
    original = server.__call__

    async def churn(offset: int) -> Page:
        if offset == 3:
            server.records = [rec("z", 2), *[rec(r["id"], 2) for r in records]]
        return await original(offset)

    with pytest.raises(
        MalformedResponse, match="6 records in 3 pages, but the server reported a total of 7"
    ):
        run_offset(churn)
    assert server.asked == [0, 3, 6]


def test_an_offset_server_that_ignores_the_offset_fails_at_the_second_page() -> None:
    server = OffsetServer([rec(f"s{i}") for i in range(7)], limit=3)
    original = server.__call__

    async def ignoring(offset: int) -> Page:
        return await original(0)

    with pytest.raises(MalformedResponse, match="page 2 repeats page 1"):
        run_offset(ignoring)


def test_the_helpers_compute_the_cursor_themselves() -> None:
    async def fetch(offset: int) -> Page:
        return Page(items=[rec("a")], next="oops", total=1)

    with pytest.raises(ValueError, match="build its pages with next=None"):
        run_offset(fetch)


# --- page index until an empty page (ESS) ------------------------------------------------------


class IndexServer:
    """``GET requests/search/{pageIndex}``: pages from ``first``, then empty pages."""

    def __init__(self, pages: list[list[Record]], first: int) -> None:
        self.pages = pages
        self.first = first
        self.asked: list[int] = []

    async def __call__(self, index: int) -> Page:
        self.asked.append(index)
        position = index - self.first
        items = self.pages[position] if 0 <= position < len(self.pages) else []
        return Page(items=items, next=None)


@pytest.mark.parametrize("first", [0, 1])
def test_index_paging_runs_until_an_empty_page(first: int) -> None:
    server = IndexServer([[rec("a"), rec("b")], [rec("c")]], first=first)
    listed = asyncio.run(
        collect_until_empty(server, first=first, key=key, target="t1", what="requests")
    )
    assert ids(listed) == ["a", "b", "c"]
    assert server.asked == [first, first + 1, first + 2]


def test_an_index_server_that_ignores_the_index_fails_at_the_second_page() -> None:
    async def fetch(index: int) -> Page:
        return Page(items=[rec("a"), rec("b")], next=None)

    with pytest.raises(MalformedResponse, match="listing requests: page 2 repeats page 1"):
        asyncio.run(collect_until_empty(fetch, first=1, key=key, target="t1", what="requests"))


# --- properties --------------------------------------------------------------------------------


@st.composite
def paged(draw: st.DrawFn, min_pages: int = 1) -> tuple[list[list[Record]], list[str]]:
    """A listing cut into pages, with copies of earlier records injected into later pages.

    Returns the pages and the ids in order. A record on page ``i`` has version ``i``; each
    page's first own record is never copied, so every page holds an id no other page has.
    """
    unique = draw(st.lists(st.integers(0, 10_000), min_size=min_pages, max_size=40, unique=True))
    record_ids = [f"s{n}" for n in unique]
    cuts: set[int] = set()
    if len(record_ids) > 1:
        between = st.integers(1, len(record_ids) - 1)
        cuts = draw(st.sets(between, min_size=min_pages - 1, max_size=12))
    bounds = [0, *sorted(cuts), len(record_ids)]
    own = [record_ids[a:b] for a, b in itertools.pairwise(bounds)]
    pages: list[list[Record]] = []
    for index, slice_ in enumerate(own):
        copyable = [record_id for earlier in own[:index] for record_id in earlier[1:]]
        copies = draw(st.lists(st.sampled_from(copyable), unique=True)) if copyable else []
        page = [rec(record_id, index) for record_id in slice_]
        for record_id in copies:
            page.insert(draw(st.integers(0, len(page))), rec(record_id, index))
        pages.append(page)
    return pages, record_ids


@given(paged(), st.booleans())
def test_each_id_comes_once_with_its_last_copy_in_first_order(
    listing: tuple[list[list[Record]], list[str]], with_total: bool
) -> None:
    pages, record_ids = listing
    server = TokenServer(pages, total=len(record_ids) if with_total else None)
    listed = run(server)
    last = {r["id"]: r["v"] for page in pages for r in page}
    first_order: dict[str, None] = {}
    for page in pages:
        first_order.update(dict.fromkeys(r["id"] for r in page if r["id"] not in first_order))
    assert listed == [rec(record_id, last[record_id]) for record_id in first_order]
    assert sorted(ids(listed)) == sorted(record_ids)


@given(paged(min_pages=3), st.data())
def test_a_page_dropped_from_the_middle_with_a_total_always_raises(
    listing: tuple[list[list[Record]], list[str]], data: st.DataObject
) -> None:
    pages, record_ids = listing
    dropped = data.draw(st.integers(1, len(pages) - 2))
    kept = [page for index, page in enumerate(pages) if index != dropped]
    with pytest.raises(MalformedResponse, match="but the server reported a total of"):
        run(TokenServer(kept, total=len(record_ids)))


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=4),
            st.none() | st.sampled_from(["t1", "t2", "t3"]) | st.integers(0, 3),
            st.none() | st.integers(0, 6),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_server_makes_the_listing_end(
    answers: list[tuple[list[str | None], Cursor, int | None]],
) -> None:
    """Whatever a server answers, the listing ends: a result or an error, never a loop."""
    asked = 0

    async def fetch(cursor: Cursor) -> Page:
        nonlocal asked
        asked += 1
        item_ids, next_cursor, total = answers[min(asked, len(answers)) - 1]
        return Page(items=[rec(i) for i in item_ids], next=next_cursor, total=total)

    try:
        listed = run(fetch, max_pages=8)
    except MalformedResponse:
        listed = None
    assert asked <= 8
    if listed is not None:
        keyed = [i for i in ids(listed) if i is not None]
        assert len(keyed) == len(set(keyed))
