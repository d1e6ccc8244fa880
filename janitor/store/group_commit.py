"""Group commit: requests that arrive while one transaction is being written share the next.

Callers are threads (the async code reaches the store through ``asyncio.to_thread``). The
scheme is the classic leader/follower one, with no timer:

1. A caller queues its request. If no leader is at work, it becomes the leader at once: a
   lone caller never waits for company.
2. Otherwise it waits. The leader starts its transaction and, once it holds what it needs to
   write (the chain's lock), takes the queue's head, up to ``max_rows`` rows (at least one
   request, its own, however large): requests that arrived while it waited for the lock
   join its batch. It writes that batch in the one transaction.
3. When the write is over, the leader settles every request of the batch (its result or its
   error), hands leadership to the oldest request still queued (or leaves none), wakes the
   batch's callers and returns its own result. The next leader repeats 2 and 3.

So batches are written one at a time in arrival order, and nobody returns before the
transaction holding their request is over: the writer decides, per request, what that
transaction did for it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")


class Pending(Generic[Q, R]):
    """One queued request: what to write, how many rows, and (once settled) what happened."""

    __slots__ = ("_error", "_result", "_settled", "_wake", "item", "rows")

    def __init__(self, item: Q, rows: int) -> None:
        self.item = item
        self.rows = rows
        self._wake = threading.Event()
        self._settled = False
        self._result: R | None = None
        self._error: BaseException | None = None

    def resolve(self, result: R) -> None:
        """The request was written: ``result`` is what its caller gets back."""
        self._result, self._settled = result, True

    def fail(self, error: BaseException) -> None:
        """The request was not written: its caller gets ``error`` raised."""
        self._error, self._settled = error, True

    def wait(self) -> None:
        """Block until a leader settles this request or promotes it to lead."""
        self._wake.wait()

    def wake(self) -> None:
        """Let the waiting caller go on (settled) or lead (not settled)."""
        self._wake.set()

    @property
    def settled(self) -> bool:
        """True once :meth:`resolve` or :meth:`fail` was called."""
        return self._settled

    def outcome(self) -> R:
        """The result, or raise the error (only once settled)."""
        if self._error is not None:
            raise self._error
        assert self._settled, "a request is returned only once settled"
        return self._result  # type: ignore[return-value]


#: Takes the batch to write (call once, when ready to write it).
Take = Callable[[], Sequence[Pending[Q, R]]]

#: Writes one batch in one transaction: calls ``take`` once (when ready) and settles every
#: request it got.
Writer = Callable[[Take[Q, R]], None]


class GroupCommit(Generic[Q, R]):
    """Batches concurrent requests into shared transactions written by ``write``.

    ``write`` must settle every request it took; one it leaves unsettled (or every one, when
    it raises) fails with the exception. A writer that raises before taking fails the batch
    it would have taken.
    """

    def __init__(self, write: Writer[Q, R], *, max_rows: int) -> None:
        self._write = write
        self._max_rows = max_rows
        self._mutex = threading.Lock()
        self._queue: deque[Pending[Q, R]] = deque()
        self._leading = False
        self._writing = 0

    @property
    def queued(self) -> int:
        """Requests waiting for their batch (those being written not included)."""
        with self._mutex:
            return len(self._queue)

    @property
    def writing(self) -> int:
        """Requests in the batch being written now (0 when none is)."""
        with self._mutex:
            return self._writing

    def submit(self, item: Q, rows: int) -> R:
        """Queue ``item`` (``rows`` rows), wait until its batch is written, return its result.

        Raises whatever ``write`` settled the request with.
        """
        pending: Pending[Q, R] = Pending(item, rows)
        with self._mutex:
            self._queue.append(pending)
            follower, self._leading = self._leading, True
        if follower:
            pending.wait()  # settled by a leader, or promoted to lead
        if not pending.settled:
            self._lead()
        return pending.outcome()

    def _lead(self) -> None:
        """Write the next batch, then hand over and wake its callers."""
        taken: list[Pending[Q, R]] = []

        def take() -> Sequence[Pending[Q, R]]:
            assert not taken, "a writer takes its batch once"
            with self._mutex:
                taken.extend(self._take())
                self._writing = len(taken)
            return taken

        try:
            self._write(take)
        except BaseException as exc:  # noqa: BLE001 (settle the batch whatever went wrong)
            for pending in taken or take():
                if not pending.settled:
                    pending.fail(exc)
        finally:
            for pending in taken or take():
                if not pending.settled:
                    pending.fail(RuntimeError("group commit: the writer left a request unsettled"))
            self._hand_over()
            for pending in taken:
                pending.wake()

    def _take(self) -> list[Pending[Q, R]]:
        """The oldest requests, up to ``max_rows`` rows (at least one request). Under the mutex."""
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self._max_rows:
            pending = self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        return batch

    def _hand_over(self) -> None:
        """Promote the oldest queued request to leader, or leave the group without one."""
        with self._mutex:
            self._writing = 0
            if self._queue:
                self._queue[0].wake()
            else:
                self._leading = False
