"""Paged listings: every page, or an error; never a silent partial listing (DESIGN 6 "Paging").

A provider writes one ``fetch(cursor) -> Page`` for its API and hands it to :func:`collect`
(token or page-header cursors: Glue ``NextToken``, OCI ``opc-next-page``), to
:func:`collect_offset` (limit/offset with a total: Fabric) or to :func:`collect_until_empty`
(a page index until an empty page: ESS). The rules:

1. The listing starts with ``fetch(None)`` and follows ``Page.next`` until it is None.
2. The same id twice within one page is an error naming the id and the page.
3. An id seen on an earlier page is a duplicate across pages (offset paging under churn makes
   them): the later page's copy, the fresher, replaces the earlier one at its position.
4. Records whose ``key`` is None (no usable id: invalid records) are kept as they are, never
   de-duplicated; the provider reports them as invalid.
5. A cursor that comes back (a server that ignores the cursor and keeps returning the same
   token) is an error naming the cursor. Ending the listing there instead could truncate it
   silently: a server that ignores the cursor but honours a page size returns the same first
   page forever, which looks exactly like one that returns everything every time.
6. A non-empty page with the very ids of the page before it, in the same order, is an error:
   the server ignores the cursor while handing out new ones (a page index it does not honour).
7. More than ``max_pages`` pages is an error: a listing always ends.
8. Fewer records (after de-duplication) than the largest ``total`` any page reported is an
   error. The largest, not the last: a record deleted between two pages shifts the offsets,
   and the record that slid into the gap is missed while the total shrinks to match the count.
   The price is a failed listing when the deleted record was one not seen yet; the next sweep
   lists again.

Every error is a :class:`~janitor.errors.MalformedResponse` (the listing fails, and no action
is taken on the target this sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from janitor.errors import MalformedResponse

log = logging.getLogger(__name__)

Cursor = str | int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page of a listing, as the provider's ``fetch`` read it.

    Attributes:
        items: the raw records of this page.
        next: the cursor of the next page (a token, a page header, an offset); None on the last
            page.
        total: the total number of records the server reported, when it reports one.
    """

    items: Sequence[Any]
    next: Cursor
    total: int | None = None


Key = Callable[[Any], str | None]


async def collect(
    fetch: Callable[[Cursor], Awaitable[Page]],
    *,
    key: Key,
    target: str,
    what: str,
    max_pages: int = 10_000,
) -> list[Any]:
    """Every record of a paged listing, each id once (the freshest copy), or an error.

    Args:
        fetch: reads one page; called with None first, then with each page's ``next``.
        key: a raw record's id, or None when it has none (kept, never de-duplicated).
        target: the target's name, for the error.
        what: what is listed (``sessions``), for the error.
        max_pages: the most pages a listing may have.

    Raises:
        MalformedResponse: the listing cannot be completed (rules 2 and 5-8 of the module).
    """
    records: list[Any] = []
    where: dict[str, int] = {}  # id -> position in records
    cursors: dict[Cursor, int] = {}  # cursor -> the page it was first asked for
    previous: list[str | None] = []
    total = -1
    again = 0
    cursor: Cursor = None
    number = 0
    while True:
        number += 1
        page = await fetch(cursor)
        keys = [key(item) for item in page.items]
        _check_page(keys, previous, number, target, what)
        for item, item_key in zip(page.items, keys, strict=True):
            if item_key is None:
                records.append(item)
            elif item_key in where:
                records[where[item_key]] = item
                again += 1
            else:
                where[item_key] = len(records)
                records.append(item)
        if page.total is not None:
            total = max(total, page.total)
        if page.next is None:
            break
        if page.next in cursors:
            raise MalformedResponse(
                f"listing {what}: page {number} gives the cursor {_show(page.next)}, already "
                f"used for page {cursors[page.next]}; the server does not advance",
                target=target,
            )
        if number >= max_pages:
            raise MalformedResponse(
                f"listing {what}: still not done after {max_pages} pages", target=target
            )
        cursors[page.next] = number + 1
        cursor = page.next
        previous = keys
    if len(records) < total:
        raise MalformedResponse(
            f"listing {what}: {len(records)} records in {number} pages, but the server "
            f"reported a total of {total}",
            target=target,
        )
    if again:
        log.debug("listing %s: %d records came again on a later page; kept the later", what, again)
    return records


def _check_page(
    keys: list[str | None], previous: list[str | None], number: int, target: str, what: str
) -> None:
    seen: set[str] = set()
    for item_key in keys:
        if item_key is None:
            continue
        if item_key in seen:
            raise MalformedResponse(
                f"listing {what}: page {number} has the id {item_key!r} twice", target=target
            )
        seen.add(item_key)
    if seen and keys == previous:
        raise MalformedResponse(
            f"listing {what}: page {number} repeats page {number - 1} ({len(keys)} records); "
            "the server ignores the cursor",
            target=target,
        )


async def collect_offset(
    fetch: Callable[[int], Awaitable[Page]],
    *,
    key: Key,
    target: str,
    what: str,
    max_pages: int = 10_000,
) -> list[Any]:
    """Limit/offset paging with a total (Fabric): from offset 0 until the total is reached.

    ``fetch(offset)`` reads the page at ``offset`` (with the provider's ``limit``) and returns
    it with the server's ``total`` (required) and ``next=None``: the next offset is computed
    here. A page shorter than the limit before the total is reached is not the end: the next
    page is asked from the new offset. An empty page before the total is an error, and so is a
    page without a total. :func:`collect`'s rules apply (duplicates, the total).
    """

    async def fetch_at(cursor: Cursor) -> Page:
        offset = cursor if isinstance(cursor, int) else 0
        page = _computed(await fetch(offset), "collect_offset")
        if page.total is None:
            raise MalformedResponse(
                f"listing {what}: the page at offset {offset} reports no total", target=target
            )
        end = offset + len(page.items)
        if end >= page.total:
            return Page(items=page.items, next=None, total=page.total)
        if not page.items:
            raise MalformedResponse(
                f"listing {what}: empty page at offset {offset}, before the reported total of "
                f"{page.total}",
                target=target,
            )
        return Page(items=page.items, next=end, total=page.total)

    return await collect(fetch_at, key=key, target=target, what=what, max_pages=max_pages)


async def collect_until_empty(
    fetch: Callable[[int], Awaitable[Page]],
    *,
    first: int,
    key: Key,
    target: str,
    what: str,
    max_pages: int = 10_000,
) -> list[Any]:
    """Page-index paging that ends with an empty page (ESS ``pageIndex``).

    ``fetch(index)`` reads the page ``index``, from ``first`` (the API's first index: 0 or 1;
    no default, since starting one past it would silently skip the first page) up by one until
    a page is empty; it returns ``next=None`` (the next index is computed here) and the total
    when the server reports one. :func:`collect`'s rules apply: a server that ignores the index
    returns the same page again, which is an error at the second page.
    """

    async def fetch_at(cursor: Cursor) -> Page:
        index = cursor if isinstance(cursor, int) else first
        page = _computed(await fetch(index), "collect_until_empty")
        return Page(items=page.items, next=index + 1 if page.items else None, total=page.total)

    return await collect(fetch_at, key=key, target=target, what=what, max_pages=max_pages)


def _computed(page: Page, helper: str) -> Page:
    if page.next is not None:
        raise ValueError(f"{helper} computes the next cursor: build its pages with next=None")
    return page


def _show(cursor: Cursor) -> str:
    """A cursor for an error message: Glue's tokens run to 400,000 characters."""
    text = repr(cursor)
    return text if len(text) <= 40 else text[:39] + "…"
