"""The crash journal: what it remembers across a killed process, and how a start settles it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from squall.abc import MessageHandler, Subscription
from squall.bus.memory import MemoryBus
from squall.entities.activation import SUCCESS, ActivationResponse
from squall.messages import SCHEDULER_TOPIC, ActivationMessage
from squall.stores.journal import LOST_IN_CRASH, CrashJournal, JournaledBus
from squall.stores.sqlite import SqliteActivationStore
from tests.unit.test_queue import ACTION


def message(n: int) -> ActivationMessage:
    return ActivationMessage(
        f"{n:032x}", "t", "guest", "guest", ACTION, 1, {"n": n}, False, "controller0", 1000 + n
    )


def reopened(path: Path) -> tuple[CrashJournal, set[str]]:
    """What a new process finds (the old one was killed, so nothing was closed)."""
    journal = CrashJournal(path)
    return journal, {entry["id"] for entry in journal.open()}


def test_accepted_and_unwritten_ids_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = CrashJournal(path)
    journal.open()
    for n in range(3):
        journal.accepted_message(message(n))
    journal.accepted_record({"activationId": "f" * 32, "namespace": "guest", "name": "trig"})
    journal.written([f"{1:032x}"])
    _, left = reopened(path)
    assert left == {f"{0:032x}", f"{2:032x}", "f" * 32}


def test_an_id_given_back_to_the_queue_is_journaled_once(tmp_path: Path) -> None:
    journal = CrashJournal(tmp_path / "j")
    journal.open()
    journal.accepted_message(message(1))
    journal.accepted_message(message(1))
    journal.accepted_record({"activationId": f"{1:032x}", "namespace": "guest", "name": "a"})
    assert len((tmp_path / "j").read_bytes().splitlines()) == 1


def test_a_torn_last_line_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = CrashJournal(path)
    journal.open()
    journal.accepted_message(message(1))
    with path.open("ab") as file:
        file.write(b'{"a": {"id": "trunc')  # a power cut in the middle of a line
    _, left = reopened(path)
    assert left == {f"{1:032x}"}


def test_the_file_is_emptied_when_everything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = CrashJournal(path)
    journal.open()
    for n in range(2000):  # more than the 64 KiB it lets grow before truncating
        journal.accepted_message(message(n))
        journal.written([f"{n:032x}"])
    assert path.stat().st_size < 64 << 10
    journal.close()
    assert not path.exists(), "a clean close with nothing open removes the journal"


def test_a_busy_journal_is_compacted_to_its_open_entries(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = CrashJournal(path, compact_bytes=8 << 10)
    journal.open()
    journal.accepted_message(message(0))  # never written: must survive every compaction
    for n in range(1, 1000):
        journal.accepted_message(message(n))
        journal.written([f"{n:032x}"])
    assert path.stat().st_size < 16 << 10
    journal.close()
    assert path.exists(), "an open entry keeps the journal for the next start"
    _, left = reopened(path)
    assert left == {f"{0:032x}"}


async def test_a_start_records_the_lost_and_keeps_the_written(tmp_path: Path) -> None:
    path = tmp_path / "j"
    killed = CrashJournal(path)
    killed.open()
    killed.accepted_message(message(1))  # never ran
    killed.accepted_message(message(2))  # ran and was written, but the mark was not
    store = SqliteActivationStore(tmp_path / "squall.db")
    await store.start()
    try:
        done = ActivationResponse(SUCCESS, {"ok": True})
        real = message(2).record(start=5, end=9, response=done, logs=[], annotations=[])
        store.store(real)
        await store.flush()
        journal, _ = reopened(path)
        store.journal = journal
        await journal.recover(store)
        lost = await store.get("guest", f"{1:032x}")
        kept = await store.get("guest", f"{2:032x}")
    finally:
        await store.close()
    assert lost is not None and lost["response"]["status"] == "whisk internal error"
    assert lost["response"]["result"] == {"error": LOST_IN_CRASH}
    assert {"key": "lostInCrash", "value": True} in lost["annotations"]
    assert {"key": "path", "value": "guest/a"} in lost["annotations"]
    assert (lost["name"], lost["start"]) == ("a", 1001)
    assert kept == real, "a record written before the crash is not overwritten"
    assert journal.recovered == [f"{1:032x}"] and journal.open_count == 0
    journal.close()
    assert not path.exists()


async def test_the_journaled_bus_records_scheduler_messages_only(tmp_path: Path) -> None:
    journal = CrashJournal(tmp_path / "j")
    journal.open()
    bus = JournaledBus(MemoryBus(), journal)
    got: list[object] = []
    handler: MessageHandler = got.append
    subscription: Subscription = bus.subscribe(SCHEDULER_TOPIC, "g", handler)
    bus.publish(SCHEDULER_TOPIC, message(7))
    bus.publish("completed-controller0", message(8))
    await asyncio.sleep(0)
    await subscription.close()
    lines = [orjson.loads(line) for line in (tmp_path / "j").read_bytes().splitlines()]
    assert [line["a"]["id"] for line in lines] == [f"{7:032x}"]
    assert got == [message(7)]

