"""GroupCommit: leader/follower batching, with a writer that records what it was given."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from janitor.store.group_commit import GroupCommit, Pending

HANG = 10.0  # a guard against hangs, never a timing assertion


class Recorder:
    """A writer: records each batch's items; the first write can be held, before it takes
    its batch, until released (as a leader waits for the database's lock)."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_with: BaseException | None = None

    def __call__(self, take: Callable[[], Sequence[Pending[str, str]]]) -> None:
        if not self.batches:
            assert self.release.wait(HANG)
        batch = take()
        self.batches.append([p.item for p in batch])
        if self.fail_with is not None and len(self.batches) == 1:
            raise self.fail_with  # the first batch only
        for pending in batch:
            pending.resolve(f"written:{pending.item}")


def wait_until(check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds (guarded against hangs)."""
    deadline = time.monotonic() + HANG
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


def submit_in_thread(group: GroupCommit[str, str], item: str, rows: int = 1) -> dict[str, object]:
    """Submit from a new thread; the returned dict gets ``result`` or ``error``."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = group.submit(item, rows)
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            box["error"] = exc

    thread = threading.Thread(target=run)
    box["thread"] = thread
    thread.start()
    return box


def held_group(max_rows: int = 100) -> tuple[GroupCommit[str, str], Recorder, dict[str, object]]:
    """A group whose leader (request "lead") is held before it takes its batch."""
    writer = Recorder(hold_first=True)
    group: GroupCommit[str, str] = GroupCommit(writer, max_rows=max_rows)
    lead = submit_in_thread(group, "lead")
    wait_until(lambda: group.queued == 1)
    return group, writer, lead


def queue(
    group: GroupCommit[str, str], items: Sequence[tuple[str, int]]
) -> list[dict[str, object]]:
    """Submit each item in order, each queued before the next is submitted."""
    boxes = []
    for item, rows in items:
        boxes.append(submit_in_thread(group, item, rows))
        count = len(boxes) + 1  # the held leader's request is queued too
        wait_until(lambda count=count: group.queued == count)  # type: ignore[misc]
    return boxes


def join(*boxes: dict[str, object]) -> None:
    for box in boxes:
        thread = box["thread"]
        assert isinstance(thread, threading.Thread)
        thread.join(HANG)
        assert not thread.is_alive()


def test_a_lone_caller_writes_at_once_and_gets_its_result() -> None:
    writer = Recorder()
    group: GroupCommit[str, str] = GroupCommit(writer, max_rows=10)
    assert group.submit("a", 1) == "written:a"
    assert group.submit("b", 1) == "written:b"
    assert writer.batches == [["a"], ["b"]]
    assert group.queued == 0
    assert group.writing == 0


def test_requests_arriving_while_the_leader_waits_join_its_batch_in_arrival_order() -> None:
    group, writer, lead = held_group()
    boxes = queue(group, [("f1", 1), ("f2", 1), ("f3", 1)])
    writer.release.set()
    join(lead, *boxes)
    assert writer.batches == [["lead", "f1", "f2", "f3"]]
    assert [b["result"] for b in boxes] == ["written:f1", "written:f2", "written:f3"]
    assert lead["result"] == "written:lead"


def test_a_batch_holds_at_most_max_rows_but_always_one_request() -> None:
    group, writer, lead = held_group(max_rows=4)
    boxes = queue(group, [("a", 3), ("b", 1), ("c", 1), ("big", 9), ("d", 1)])
    writer.release.set()
    join(lead, *boxes)
    assert writer.batches == [["lead", "a"], ["b", "c"], ["big"], ["d"]]


def test_a_failed_write_fails_every_request_of_its_batch_only() -> None:
    group, writer, lead = held_group(max_rows=3)
    boxes = queue(group, [("f1", 1), ("f2", 1), ("next", 1)])
    writer.fail_with = RuntimeError("disk on fire")
    writer.release.set()
    join(lead, *boxes)
    assert writer.batches == [["lead", "f1", "f2"], ["next"]]
    assert all(isinstance(b.get("error"), RuntimeError) for b in (lead, *boxes[:2]))
    assert boxes[2]["result"] == "written:next"


def test_a_writer_that_fails_before_taking_fails_the_batch_it_would_have_taken() -> None:
    def broken(take: Callable[[], Sequence[Pending[str, str]]]) -> None:
        raise ConnectionError("database unreachable")

    group: GroupCommit[str, str] = GroupCommit(broken, max_rows=10)
    with pytest.raises(ConnectionError):
        group.submit("a", 1)
    assert group.queued == 0


def test_a_request_the_writer_leaves_unsettled_fails() -> None:
    group: GroupCommit[str, str] = GroupCommit(lambda take: None, max_rows=10)
    with pytest.raises(RuntimeError, match="unsettled"):
        group.submit("lost", 1)


def test_many_threads_each_get_their_own_result_exactly_once() -> None:
    writer = Recorder()
    group: GroupCommit[str, str] = GroupCommit(writer, max_rows=7)
    results: dict[str, str] = {}
    lock = threading.Lock()

    def caller(k: int) -> None:
        for i in range(50):
            item = f"{k}-{i}"
            result = group.submit(item, 1)
            with lock:
                results[item] = result

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert len(results) == 400
    assert all(result == f"written:{item}" for item, result in results.items())
    written = [item for batch in writer.batches for item in batch]
    assert sorted(written) == sorted(results)
    assert max(len(batch) for batch in writer.batches) <= 7
