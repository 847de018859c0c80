"""The alarm timer service: fires alarm triggers on time, once per tick, across restarts.

Timing
------
One timer task keeps a heap of (due instant, alarm) and sleeps until the earliest due instant
(`asyncio.timeout` on an event, i.e. `loop.call_at`): no polling. Creating, updating, pausing or
deleting an alarm re-arms it. The sleep is capped at `max_sleep_s` (60 s) so a wall-clock jump
(NTP step, suspended laptop) is noticed within a minute; `rearm()` makes it look at once.
Each due tick is fired by its own task, at most `max_concurrent_fires` in their first attempt at
once (the rest of a burst waits in the heap), so a slow fire never delays another alarm's tick.
The cap (256; `scheduler.alarm_fires_in_flight`) is also the scheduler's backpressure: a fire
with an active rule holds its slot until its trigger record's group commit, so fires/s is at
most the cap divided by that latency. Its rules' actions count as in flight for the
namespace's quota from before that commit, so a higher cap also gets more of them refused
(429 in the trigger activation's logs) while the commits are slow.
An alarm has at most one tick in flight; its next tick is armed when the fire returns.

Exactly once per tick
---------------------
* A tick's activation id is deterministic: the first 32 hex digits of
  sha256("{namespace}/{trigger}|{tick ISO}") (`activation_id_for`). The fire callback (the
  controller's trigger fire) is idempotent on that id.
* An alarm's `next_tick` is persisted only AFTER the fire callback returned (in the next batch
  of state writes, a few ms later). A crash between the fire and the write leaves the old
  `next_tick` in the store; on restart that tick is in the
  past, so the misfire policy fires it again WITH THE SAME ID, and the controller drops the
  duplicate. A crash before the fire leaves the same state, and the tick is fired for the first
  time. So a tick is never lost (beyond what the alarm's misfire policy asks) and never doubled.
* Retries of a failed or throttled fire reuse the tick's id, for the same reason.
* If the store fails after a fire, the service keeps firing from memory and retries the write
  with backoff; a crash meanwhile only means some ticks are fired again with their same ids.
* The ledger lookup is skipped when the service knows a tick was never fired: it armed the
  tick itself (not restored from the store) and this is the first attempt.

Misfires
--------
A tick is missed when it is more than `misfire_grace_s` (1 s) late: when a restored tick comes
up (ticks that fell while no service ran; the policy is applied then, not at `start()`) and after
a fire that took longer than the next tick's spacing (retries, a backlog).
The alarm's policy decides: `skip` drops them, `fire_once` (default) fires the most recent one,
`fire_all` fires each one within `catchup_window_s`, oldest first. OpenWhisk's provider replays
nothing (`skip`); Squall's default never loses a tick silently.

Shards and fencing (cluster mode)
---------------------------------
With `owns` set, a service holds only the alarms whose shard (`squall.alarms.shards`) this
scheduler owns: `start()` skips the others without decoding them, `rebalance()` (called by the
lead scheduler's placement when membership changes) writes and drops those no longer owned and
takes up the newly owned ones from the store, `unsure`: their next fire checks the ledger, so a
tick the former owner fired is never fired twice, and ticks that fell in the gap go through the
misfire policy. Right before every fire (and every retry), `may_fire` (the coordinator's
`lease_valid`) and `owns` are asked again: a scheduler that lost its lease or its shard holds the
tick back (logged once) instead of firing it; the tick stays the alarm's next one, for this
process when its lease is valid again or for the shard's next owner. Creating, changing or
deleting an alarm of a shard owned elsewhere raises `NotOwner`.

Storage
-------
Alarms are JSON documents (`Alarm.to_doc`) in the entity store's collection "alarms", under the
path `#alarms/{namespace}` with the trigger's name. Not under `{namespace}` itself: the store keeps
names unique per path across collections (as OpenWhisk's document ids are), so the trigger entity
`guest/t` and its alarm `guest/t` would collide; and listing every alarm at start needs a common
root. `#` can never start a namespace name.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from squall.abc import EntityStore, EntityWrite, JSONDict, StoredText
from squall.alarms.model import (
    Alarm,
    AlarmKind,
    AlarmStatus,
    DeleteAfterFire,
    LastFire,
    Plan,
    StatusReason,
    activation_id_for,
    due_at,
    epoch_ms,
    js_iso,
    msg_status_code,
    plan_next,
)
from squall.alarms.schedule import AlarmValidationError, ensure_utc
from squall.errors import ConflictError, NotFoundError, SquallError

__all__ = [
    "ALARMS_COLLECTION",
    "ALARMS_ROOT",
    "AlarmService",
    "AlarmStats",
    "DeleteAfterFireCallback",
    "FireCallback",
    "FireOutcome",
    "FireRecord",
    "FireResult",
    "NotOwner",
    "Ownership",
    "RetryPolicy",
    "store_path",
]

log = logging.getLogger(__name__)

ALARMS_COLLECTION = "alarms"
ALARMS_ROOT = "#alarms"
LAG_SAMPLES = 4096
# Restored alarms decoded at a time after start (~15 µs each: ~3 ms), then as long a rest.
DECODE_SLICE = 200


def store_path(namespace: str) -> str:
    """The entity-store path an alarm of `namespace` is kept under."""
    return f"{ALARMS_ROOT}/{namespace}"


class NotOwner(SquallError):
    """This scheduler does not own the shard of the alarm (cluster mode): ask its owner."""

    def __init__(self, namespace: str, trigger: str) -> None:
        super().__init__(
            f"this scheduler does not own the shard of the alarm of trigger "
            f"/{namespace}/{trigger} now; ask the scheduler that owns it"
        )
        self.namespace = namespace
        self.trigger = trigger


class FireOutcome(StrEnum):
    FIRED = "fired"  # the trigger fired (its rules' actions were invoked)
    NO_ACTIVE_RULES = "no_active_rules"  # the trigger fired; no active rule to invoke
    TRIGGER_GONE = "trigger_gone"  # 404 (or another permanent 4xx): disable the alarm
    THROTTLED = "throttled"  # 429: retry with backoff, bounded
    FAILED = "failed"  # transient (timeout, 5xx, unreachable): retry a few times


@dataclass(frozen=True, slots=True)
class FireResult:
    """What the fire callback reports for one attempt."""

    outcome: FireOutcome
    message: str = ""
    status_code: int | None = None
    retry_after_s: float | None = None  # a throttled caller's hint

    @property
    def delivered(self) -> bool:
        """The trigger fired: the tick is done and counts toward maxTriggers."""
        return self.outcome in (FireOutcome.FIRED, FireOutcome.NO_ACTIVE_RULES)

    @classmethod
    def fired(cls) -> FireResult:
        return cls(FireOutcome.FIRED)

    @classmethod
    def no_active_rules(cls) -> FireResult:
        return cls(FireOutcome.NO_ACTIVE_RULES)

    @classmethod
    def trigger_gone(cls, status_code: int = 404, message: str = "") -> FireResult:
        return cls(FireOutcome.TRIGGER_GONE, message, status_code)

    @classmethod
    def throttled(cls, retry_after_s: float | None = None, message: str = "") -> FireResult:
        return cls(FireOutcome.THROTTLED, message, 429, retry_after_s)

    @classmethod
    def failed(cls, message: str = "", status_code: int | None = None) -> FireResult:
        return cls(FireOutcome.FAILED, message, status_code)


class FireCallback(Protocol):
    """Fire the alarm's trigger with alarm.payload, idempotently on `activation_id`.

    `maybe_fired` is False when this service knows the tick was never fired before (it armed
    the tick itself and this is the first attempt): the callback may then skip its ledger
    lookup. Exceptions count as FAILED.
    """

    def __call__(
        self, alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
    ) -> Awaitable[FireResult]: ...


# on_delete_after_fire(alarm, "true" | "rules"): a once-alarm fired; delete its trigger (and,
# for "rules", the trigger's rules). The service deletes the alarm itself afterwards.
DeleteAfterFireCallback = Callable[[Alarm, DeleteAfterFire], Awaitable[None]]
# on_throttled(alarm, tick, activation_id, message): every attempt of a tick was refused by
# the namespace's fires-per-minute limit; the callback records the tick as throttled (under its
# activation id) so it is not lost silently.
ThrottledCallback = Callable[[Alarm, datetime, str, str], Awaitable[None]]
Clock = Callable[[], datetime]
# owns(namespace, trigger): whether this process owns the alarm's shard now (cluster mode).
# Called for every alarm at start and rebalance and before every fire: it must be cheap.
Ownership = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long one tick's fire is retried (always with the tick's own id).

    Throttled: OpenWhisk's backoff max(1 s, 1 s x throttles^2), capped at `max_delay_s`.
    Failed: doubling from `base_delay_s`. Once attempts run out the tick is recorded as not
    delivered and the alarm goes on with its next tick (it is not disabled, unlike OpenWhisk).
    """

    failed_attempts: int = 4
    throttled_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def failed_delay(self, failures: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (failures - 1)))

    def throttled_delay(self, throttles: int, hint: float | None) -> float:
        wanted = max(self.base_delay_s, self.base_delay_s * throttles**2, hint or 0.0)
        return float(min(self.max_delay_s, wanted))


@dataclass(frozen=True, slots=True)
class FireRecord:
    """One fire, kept in the service's in-memory ring of recent fires."""

    alarm_id: str
    tick: datetime
    due: datetime
    fired_at: datetime
    lag_ms: float
    activation_id: str
    outcome: FireOutcome
    attempts: int
    catchup: bool


@dataclass(frozen=True, slots=True)
class AlarmStats:
    """Totals since this service started (for metrics)."""

    alarms: int
    active: int
    paused: int
    scheduled: int
    in_flight: int
    fires: int  # ticks whose fire finished (delivered or not)
    delivered: int
    not_delivered: int  # gave up after retries
    retries: int
    throttled: int
    triggers_gone: int
    missed_ticks: int  # ticks found missed (catch-up fires plus dropped)
    catchup_fires: int
    dropped_ticks: int  # a lower bound when a huge backlog was counted with a cap
    persist_failures: int  # state writes (batches of alarms) that failed
    internal_errors: int
    lag_samples: int  # on-time fires in the lag window (catch-up fires excluded)
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    held_back: int = 0  # alarms whose due tick this process may not fire now (cluster mode)
    # How late the earliest due tick not yet launched is (0: none is due): the timer's backlog.
    behind_ms: float = 0.0


# What a fire changes in an alarm, as _Entry keeps it until the whole alarm is asked for:
# (LastFire's seven fields, fires_count, next_tick). A new frozen Alarm and LastFire per fire
# lived until the alarm's next fire, a minute often, so at 1,000 fires a second they filled the
# collector's older generations, and collecting those paused the event loop for 20-120 ms.
# An exact tuple of plain values is untracked by the collector at its first collection.
_FireState = tuple[datetime, datetime, float, str, str, int, bool, int, datetime | None]


def _with_fire_state(alarm: Alarm, fired: _FireState) -> Alarm:
    tick, fired_at, lag_ms, activation_id, outcome, attempts, catchup, count, next_tick = fired
    last = LastFire(tick, fired_at, lag_ms, activation_id, outcome, attempts, catchup)
    return replace(alarm, last_fire=last, fires_count=count, next_tick=next_tick)


class _Entry:
    """An alarm as the service holds it: kept small, there may be a hundred thousand.

    A restored alarm keeps its stored JSON text until something needs the alarm itself (its
    tick comes up, an API call, a write): a restart then decodes only each alarm's schedule
    state (`_Arming`), and decoding whole documents, about half of the start time at 100,000
    alarms, is spread over the alarms' first ticks. `active` and `paused` mirror the alarm's
    status for counting without decoding."""

    __slots__ = (
        "_alarm", "_fired", "_text", "active", "armed", "generation", "id", "paused", "revision",
        "token", "unsure",
    )  # fmt: skip
    _alarm: Alarm | None
    _fired: _FireState | None  # what fires changed since `_alarm` was last built
    _text: str | None  # the stored document, until decoded
    active: bool
    paused: bool

    def __init__(
        self,
        alarm: Alarm | None,
        revision: int,
        *,
        unsure: bool,
        id: str = "",
        text: str | None = None,
        arming: _Arming | None = None,
    ) -> None:
        if alarm is not None:
            self.alarm = alarm
            self.id = id or alarm.id  # `namespace/trigger`, as the service's maps are keyed
        else:
            assert text is not None and arming is not None and id
            self._alarm, self._fired, self._text, self.id = None, None, text, id
            self.active, self.paused = arming.active, arming.paused
        self.revision = revision
        self.token = 0  # identifies the one valid heap entry of this alarm
        self.armed = False  # it has one (counted by stats without walking the heap)
        self.generation = 0  # grows on every user change; a fire started before one defers
        # The next tick may have been fired already (by a run that crashed before writing the
        # alarm back, or by a previous owner): its fire must check the ledger.
        self.unsure = unsure

    @property
    def alarm(self) -> Alarm:
        """The alarm as it is now, decoded from its stored text on first use (ValueError,
        KeyError or TypeError when that is not an alarm document: see AlarmService._decoded)
        and rebuilt with the fire state its fires recorded since."""
        alarm = self.config
        fired = self._fired
        if fired is not None:
            alarm = _with_fire_state(alarm, fired)
            self._alarm, self._fired = alarm, None
        return alarm

    @alarm.setter
    def alarm(self, alarm: Alarm) -> None:
        self._alarm, self._fired, self._text = alarm, None, None
        self.active, self.paused = alarm.status.active, alarm.status.paused

    @property
    def config(self) -> Alarm:
        """The alarm without building it anew: its configuration and status are current, but
        its `last_fire`, `fires_count` and `next_tick` may be older than `alarm`'s (the fire
        path reads `fires_count` here instead)."""
        alarm = self._alarm
        if alarm is None:
            alarm = Alarm.from_doc(orjson.loads(self._text or ""))
            self._alarm, self._text = alarm, None
        return alarm

    @property
    def fires_count(self) -> int:
        fired = self._fired
        return fired[7] if fired is not None else self.config.fires_count

    def record_fire(self, fired: _FireState) -> None:
        """A fire changed only the alarm's fire state: kept beside the alarm, not built in."""
        self._fired = fired

    def doc(self) -> JSONDict:
        """The alarm's stored document as it is now; the alarm built for it is not kept."""
        fired = self._fired
        alarm = self.config
        return (alarm if fired is None else _with_fire_state(alarm, fired)).to_doc()

    @property
    def decoded(self) -> bool:
        return self._alarm is not None


@dataclass(frozen=True, slots=True)
class _Arming:
    """What a restart reads of each stored alarm to arm it: its status and next tick."""

    active: bool
    paused: bool
    next_tick: datetime | None
    jitter_s: float

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> _Arming:
        """ValueError, KeyError or TypeError when `doc` is not an alarm document."""
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("name"):
            raise ValueError("not an alarm document")
        status = doc.get("status") or {}
        if not isinstance(status, dict):
            raise TypeError("the alarm's status is not an object")
        tick = doc.get("nextTick")
        return cls(
            active=bool(status.get("active", True)),
            paused=bool(status.get("paused", False)),
            next_tick=ensure_utc(datetime.fromisoformat(tick)) if tick else None,
            jitter_s=float(doc.get("jitterSeconds", 0.0)),
        )

    def due_at(self, alarm_id: str, tick: datetime) -> datetime:
        return due_at(alarm_id, tick, self.jitter_s)


@dataclass(slots=True)
class _RestoreSummary:
    """What restoring alarms found, logged as a few lines, not one per alarm."""

    overdue: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def log(self) -> None:
        if self.overdue:
            log.info(
                "%d alarms missed ticks while no scheduler ran; their misfire policies decide "
                "which fire now, e.g. %s",
                len(self.overdue),
                _examples(self.overdue),
            )
        if self.ended:
            log.warning(
                "%d alarms have no ticks left and end now, e.g. %s",
                len(self.ended),
                _examples(self.ended),
            )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Load a hundred thousand alarms without the cyclic garbage collector running over them
    again and again (it doubled the start time), then freeze what was loaded: long-lived
    objects leave the collected generations, so later full collections stay short and do not
    show up as fire lag. Objects freed later are still freed (by reference counting)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()


def _examples(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(ids[:n])
    return shown if len(ids) <= n else f"{shown} (+{len(ids) - n} more)"


class _KeyedLocks:
    """One asyncio.Lock per alarm, created on demand and dropped when free.

    Only user changes (update, pause, resume, delete) take one; a fire's bookkeeping runs
    without awaiting, so it needs the lock only while a user change holds it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def held(self, key: str) -> bool:
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class _HeldBack(Exception):
    """A tick's retry found that this process may not fire it any more."""


# heap item: (due, sequence, alarm id, token, tick, catch-up)
_HeapItem = tuple[datetime, int, str, int, datetime, bool | None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlarmService:
    """Owns every alarm in an entity store and fires them through `fire`."""

    def __init__(
        self,
        store: EntityStore,
        fire: FireCallback,
        *,
        clock: Clock | None = None,
        max_concurrent_fires: int = 256,
        on_delete_after_fire: DeleteAfterFireCallback | None = None,
        on_throttled: ThrottledCallback | None = None,
        retry: RetryPolicy | None = None,
        misfire_grace_s: float = 1.0,
        max_cron_fields: int = 6,
        recent_fires: int = LAG_SAMPLES,
        max_sleep_s: float = 60.0,
        close_grace_s: float = 2.0,
        fire_timeout_s: float = 30.0,
        write_delay_s: float = 0.02,
        write_batch: int = 1024,
        owns: Ownership | None = None,
        may_fire: Callable[[], bool] | None = None,
        fence_retry_s: float = 0.5,
        handoff_margin_s: float = 2.0,
    ) -> None:
        """`owns` (cluster mode): whether this process owns an alarm's shard now; None owns
        every alarm. `may_fire`: the fence (the coordinator's `lease_valid`); None always may.
        `fence_retry_s`: how often ticks held back by the fence are looked at again.
        `handoff_margin_s`: after taking alarms up, ticks due up to this long after it check
        the ledger too (the former owner may learn of the move a little later)."""
        if max_concurrent_fires < 1:
            raise ValueError("max_concurrent_fires must be at least 1")
        self._store = store
        self._fire = fire
        self._clock = clock or _utc_now
        self._on_delete_after_fire = on_delete_after_fire
        self._on_throttled = on_throttled
        self._retry = retry or RetryPolicy()
        self._grace_s = misfire_grace_s
        self._grace = timedelta(seconds=misfire_grace_s)
        self._max_cron_fields = max_cron_fields
        self._max_sleep_s = max_sleep_s
        self._close_grace_s = close_grace_s
        self._fire_timeout_s = fire_timeout_s
        self._max_fires = max_concurrent_fires
        self._semaphore = asyncio.Semaphore(max_concurrent_fires)
        self._first_attempts = 0  # launched fires still in their first attempt
        self._write_delay_s = write_delay_s
        self._write_batch = write_batch
        self._owns = owns
        self._may_fire = may_fire
        self._fence_retry_s = fence_retry_s
        self._handoff_margin = timedelta(seconds=handoff_margin_s)
        # Ticks due up to here may have been fired by a former owner or by the run before a
        # crash, also those a restored alarm's catch-up chain reaches on time: check the ledger.
        self._unsure_until = datetime.min.replace(tzinfo=UTC)
        # Alarms whose due tick was held back, by the fence or by a lost shard: re-armed (their
        # misfire policy applies then) once this process may fire them again.
        self._fenced: dict[str, _Entry] = {}  # may_fire() was False
        self._unowned: dict[str, _Entry] = {}  # owns() was False; rebalance() decides
        self._holding_back = False  # ticks are held back now (logged once per episode)
        self._fence_broken = False  # may_fire() raised (logged once per episode)
        self._rebalance_lock = asyncio.Lock()
        self._entries: dict[str, _Entry] = {}
        self._locks = _KeyedLocks()
        # Alarms whose state in memory is ahead of the store, written in batches by one task.
        self._dirty: dict[str, _Entry] = {}
        self._dirty_event = asyncio.Event()
        self._write_lock = asyncio.Lock()  # one alarm write in flight: revisions stay exact
        self._write_failing = False
        self._fires_done = False  # set by close() once no fire can change an alarm any more
        self._heap: list[_HeapItem] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._create_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._decoder: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        # The last fires of all alarms (a ring, not one per alarm: memory stays flat with the
        # number of alarms); every fire's full record is its trigger activation.
        self._recent: deque[FireRecord] = deque(maxlen=recent_fires)
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "fires",
                "delivered",
                "not_delivered",
                "retries",
                "throttled",
                "triggers_gone",
                "missed_ticks",
                "catchup_fires",
                "dropped_ticks",
                "persist_failures",
                "internal_errors",
            ),
            0,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every alarm, apply misfire policies to ticks missed while down, start timing.

        Store errors propagate (the caller reports not-ready and retries).
        """
        if self._started:
            raise RuntimeError("the alarm service is already started")
        began = time.perf_counter()
        self._unsure_until = self.now() + (
            self._handoff_margin if self._owns is not None else timedelta()
        )
        with _collector_paused():
            summary = await self._load_all()
        self._started = True
        self._timer = asyncio.create_task(self._run_timer(), name="squall-alarm-timer")
        self._writer = asyncio.create_task(self._write_loop(), name="squall-alarm-writer")
        self._decode_soon()
        summary.log()
        log.info(
            "alarm service started with %d alarms (%d scheduled) in %.2f s",
            len(self._entries),
            len(self._heap),
            time.perf_counter() - began,
        )

    def _restore_page(
        self,
        page: builtins.list[StoredText],
        now: datetime,
        summary: _RestoreSummary,
        *,
        bulk: bool = True,
    ) -> None:
        """Hold and arm the owned alarms of one page; `bulk`: the caller heapifies (at start;
        a rebalance pushes each, as the timer runs meanwhile)."""
        owns = self._owns
        cut = len(ALARMS_ROOT) + 1
        entries = self._entries
        late_line = now - self._grace
        for stored in page:
            namespace = stored.namespace[cut:]
            key = f"{namespace}/{stored.name}"
            if key in entries:
                continue  # seen on an earlier page (moved during the scan), or held already
            if owns is not None and not owns(namespace, stored.name):
                continue  # another scheduler's shard: not even decoded
            try:
                arming = _Arming.of(orjson.loads(stored.text))
            except (KeyError, ValueError, TypeError):
                self._unreadable(key)
                continue
            entry = entries[key] = _Entry(
                None, stored.revision, unsure=True, id=key, text=stored.text, arming=arming
            )
            try:
                if arming.next_tick is None:  # ended, paused, or never fired: decoded now
                    if self._decoded(entry):
                        self._restore(entry, now, summary, bulk=bulk)
                elif arming.active and not arming.paused:
                    due = arming.due_at(key, arming.next_tick)
                    if due < late_line:
                        summary.overdue.append(key)
                    self._arm(entry, arming.next_tick, catchup=None, heap_push=not bulk, due=due)
            except Exception:  # one bad alarm must not keep the others from starting
                self._counts["internal_errors"] += 1
                log.exception("alarm %s could not be scheduled", key)

    def _decoded(self, entry: _Entry) -> bool:
        """Decode a restored alarm's document if not done yet; an unreadable one is dropped
        (logged and counted) as a start drops it, and False is answered."""
        if entry.decoded:
            return True
        try:
            entry.alarm  # noqa: B018 -- decodes
        except Exception:  # whatever it is, the document is not an alarm's
            self._unreadable(entry.id)
            self._forget(entry)
            return False
        return True

    def _decode_soon(self) -> None:
        """Decode the restored alarms no tick has decoded yet, after start (see _decode_rest)."""
        if self._decoder is None or self._decoder.done():
            self._decoder = asyncio.create_task(self._decode_rest(), name="squall-alarm-decoder")

    async def _decode_rest(self) -> None:
        """Decode every alarm still held as text, DECODE_SLICE at a time, resting as long as
        each slice took (at most half the loop's time: the rest of the platform is starting,
        or firing a restart's backlog), with the collector paused; then freeze what was
        built, as start does. 100,000 alarms take about 3 s.

        Left to their first ticks, 60,000 alarms firing once a minute were decoded over the
        minute after a restart: ~300,000 long-lived objects passing through the collector's
        young generations, whose collections then paused the loop for 60-120 ms at a time.
        Frozen, no collection walks them. Cyclic garbage made meanwhile by other work is
        frozen with them (kept until close); the fire path makes none."""
        with _collector_paused():
            while not self._closing:
                waiting = [e for e in self._entries.values() if not e.decoded]
                if not waiting:
                    return
                for start in range(0, len(waiting), DECODE_SLICE):
                    began = time.perf_counter()
                    for entry in waiting[start : start + DECODE_SLICE]:
                        if self._entries.get(entry.id) is entry:
                            self._decoded(entry)
                    await asyncio.sleep(time.perf_counter() - began)
                    if self._closing:
                        return

    def _unreadable(self, alarm_id: str) -> None:
        log.exception("skipping unreadable alarm document %s", alarm_id)
        self._counts["internal_errors"] += 1

    async def close(self) -> None:
        """Stop timing; let fires in flight finish (up to close_grace_s), write what is pending.

        A fire cut off here was either not made or is made again, with the same activation id,
        by the next start.
        """
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._close_grace_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._decoder is not None:
            self._decoder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._decoder
        if self._writer is not None:
            self._fires_done = True
            self._dirty_event.set()  # the writer sees `_fires_done`, writes what is left, ends
            try:
                await asyncio.wait_for(self._writer, timeout=self._close_grace_s + 5.0)
            except TimeoutError:
                log.warning("alarm service: the last state write did not finish in time")
        gc.unfreeze()  # what start() froze may be garbage now (tests start many services)
        unsaved = len(self._dirty)
        if unsaved:
            log.warning(
                "alarm service closed with %d alarms not written; their last ticks "
                "will be fired again (same activation ids) at the next start",
                unsaved,
            )

    def now(self) -> datetime:
        """The service's clock, aware UTC."""
        return ensure_utc(self._clock(), "clock()")

    def rearm(self) -> None:
        """Re-read the clock and re-arm the timer now (after a wall-clock jump; in tests)."""
        self._wake.set()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no fire is in flight and no tick is due (tests, graceful drains)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            pending = [t for t in self._tasks if not t.done()]
            if self._decoder is not None and not self._decoder.done():
                pending.append(self._decoder)
            due = self._peek()
            writing = (bool(self._dirty) or self._write_lock.locked()) and not self._write_failing
            if not pending and not writing and (due is None or due[0] > self.now()):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"alarm service not idle after {timeout_s} s")
            if pending:
                await asyncio.wait(pending, timeout=remaining)
            else:
                await asyncio.sleep(0.001)

    # -- the API ------------------------------------------------------------------------------

    async def create(self, alarm: Alarm) -> Alarm:
        """Persist and schedule a new alarm (built with `Alarm.from_params`).

        ConflictError when the trigger already has one; AlarmValidationError when it would
        never fire.
        """
        self._require_started()
        if not self.owns(alarm.namespace, alarm.trigger):
            raise NotOwner(alarm.namespace, alarm.trigger)
        async with self._create_lock:
            if not self.owns(alarm.namespace, alarm.trigger):  # the shard moved meanwhile
                raise NotOwner(alarm.namespace, alarm.trigger)
            if alarm.id in self._entries:
                raise ConflictError(f"trigger {alarm.id} already has an alarm")
            now = self.now()
            fresh = replace(
                alarm,
                status=AlarmStatus(date_changed=now),
                last_fire=None,
                fires_count=0,
                next_tick=None,
            )
            tick = fresh.next_tick_after(now)
            if tick is None:
                raise AlarmValidationError(
                    "the first scheduled trigger fire is not until after the stop date"
                )
            fresh = replace(fresh, next_tick=tick)
            stored = await self._store.put(
                ALARMS_COLLECTION,
                store_path(fresh.namespace),
                fresh.trigger,
                fresh.to_doc(),
                None,
            )
            entry = _Entry(fresh, stored.revision, unsure=False)
            self._entries[fresh.id] = entry
            self._arm(entry, tick, catchup=False)
        log.info("alarm %s created (%s), first tick %s", fresh.id, _describe(fresh), tick)
        return fresh

    def get(self, namespace: str, trigger: str) -> Alarm | None:
        """The alarm of a trigger, None when there is none."""
        entry = self._entries.get(f"{namespace}/{trigger}")
        return entry.alarm if entry is not None and self._decoded(entry) else None

    def list(self, namespace: str) -> list[Alarm]:
        """Every alarm of a namespace, by trigger name."""
        prefix = f"{namespace}/"
        mine = [e for e in self._entries.values() if e.id.startswith(prefix)]
        found = [e.alarm for e in mine if self._decoded(e)]
        return sorted(found, key=lambda a: a.trigger)

    async def update(self, namespace: str, trigger: str, params: Mapping[str, Any]) -> Alarm:
        """Apply a feed UPDATE (see `Alarm.updated`); re-enables a disabled alarm.

        NotFoundError, AlarmValidationError; store errors propagate and change nothing.
        """
        entry = self._entry(namespace, trigger)
        async with self._locks.hold(entry.id):
            self._check_current(entry)
            now = self.now()
            new = entry.alarm.updated(params, now=now, max_cron_fields=self._max_cron_fields)
            tick = None if new.status.paused else new.next_tick_after(now)
            new = replace(new, next_tick=tick)
            await self._write(entry, new)
            self._bump(entry)
            if tick is not None:
                self._arm(entry, tick, catchup=False)
        log.info("alarm %s updated (%s), next tick %s", new.id, _describe(new), tick)
        return new

    async def delete(self, namespace: str, trigger: str) -> bool:
        """Remove an alarm; False when there was none. A fire in flight still completes."""
        self._require_started()
        if not self.owns(namespace, trigger):
            raise NotOwner(namespace, trigger)
        alarm_id = f"{namespace}/{trigger}"
        entry = self._entries.get(alarm_id)
        if entry is None:
            return await self._store.delete(ALARMS_COLLECTION, store_path(namespace), trigger)
        async with self._locks.hold(alarm_id), self._write_lock:
            if self._entries.get(alarm_id) is not entry:
                return False
            await self._store.delete(ALARMS_COLLECTION, store_path(namespace), trigger)
            self._forget(entry)
        log.info("alarm %s deleted", alarm_id)
        return True

    async def pause(self, namespace: str, trigger: str) -> Alarm:
        """Hold an alarm: nothing fires until `resume`; ticks meanwhile are not made up."""
        entry = self._entry(namespace, trigger)
        async with self._locks.hold(entry.id):
            self._check_current(entry)
            alarm = entry.alarm
            if alarm.status.paused:
                return alarm
            now = self.now()
            new = replace(
                alarm.with_status(now, paused=True, reason=StatusReason("USER", "paused")),
                next_tick=None,
                config_version=alarm.config_version + 1,
            )
            await self._write(entry, new)
            self._bump(entry)
        log.info("alarm %s paused", new.id)
        return new

    async def resume(self, namespace: str, trigger: str) -> Alarm:
        """Undo `pause`: the next tick after now fires (paused-over ticks are not made up)."""
        entry = self._entry(namespace, trigger)
        async with self._locks.hold(entry.id):
            self._check_current(entry)
            alarm = entry.alarm
            if not alarm.status.paused:
                return alarm
            now = self.now()
            reason = None if alarm.status.active else alarm.status.reason
            resumed = alarm.with_status(now, paused=False, reason=reason)
            tick = resumed.next_tick_after(now) if resumed.status.active else None
            new = replace(resumed, next_tick=tick, config_version=alarm.config_version + 1)
            await self._write(entry, new)
            self._bump(entry)
            if tick is not None:
                self._arm(entry, tick, catchup=False)
        log.info("alarm %s resumed, next tick %s", new.id, tick)
        return new

    def next_fire_times(self, alarm: Alarm, n: int) -> builtins.list[datetime]:
        """The next `n` instants `alarm` will fire at (due instants, jitter included)."""
        if not alarm.status.active or alarm.status.paused or n <= 0:
            return []
        tick = alarm.next_tick or alarm.next_tick_after(self.now())
        left = alarm.triggers_left()
        limit = n if left is None else min(n, left)
        schedule = alarm.schedule()
        out: list[datetime] = []
        while tick is not None and len(out) < limit:
            out.append(alarm.due_at(tick))
            tick = schedule.next_after(tick)
        return out

    def recent_fires(self, namespace: str, trigger: str) -> builtins.list[FireRecord]:
        """The alarm's fires among the service's last `recent_fires`, oldest first (empty
        after a restart). Every fire's full record is its trigger activation."""
        alarm_id = f"{namespace}/{trigger}"
        return [r for r in self._recent if r.alarm_id == alarm_id]

    def read_view(self, alarm: Alarm, *, next_count: int = 5) -> JSONDict:
        """OpenWhisk's feed READ body, plus Squall's extras (next, last_fire, misfire_policy,
        catchup_window_s, jitter_s, paused, fires_count)."""
        config: JSONDict = {
            "name": alarm.trigger,
            "namespace": alarm.namespace,
            "payload": alarm.payload,
        }
        if alarm.kind is AlarmKind.ONCE:
            config["date"] = js_iso(alarm.date) if alarm.date else None
            config["deleteAfterFire"] = alarm.delete_after_fire
        else:
            config["startDate"] = js_iso(alarm.start_date) if alarm.start_date else None
            config["stopDate"] = js_iso(alarm.stop_date) if alarm.stop_date else None
            if alarm.kind is AlarmKind.INTERVAL:
                config["minutes"] = alarm.minutes
            else:
                config["cron"] = alarm.cron
                config["timezone"] = alarm.timezone or "UTC"
                if alarm.strict is not None:
                    config["strict"] = alarm.strict
            if alarm.max_triggers is not None:
                config["maxTriggers"] = alarm.max_triggers
        changed = alarm.status.date_changed
        status: JSONDict = {
            "active": alarm.status.active,
            "dateChanged": epoch_ms(changed) if changed else None,
            "dateChangedISO": js_iso(changed) if changed else None,
            "reason": alarm.status.reason.to_json() if alarm.status.reason else None,
        }
        return {
            "config": config,
            "status": status,
            "next": [js_iso(t) for t in self.next_fire_times(alarm, next_count)],
            "last_fire": alarm.last_fire.to_json() if alarm.last_fire else None,
            "misfire_policy": alarm.misfire,
            "catchup_window_s": alarm.catchup_window_s,
            "jitter_s": alarm.jitter_s,
            "paused": alarm.status.paused,
            "fires_count": alarm.fires_count,
        }

    @property
    def state(self) -> str:
        """`starting` until every alarm is loaded, then `running`, `closing` once stopping."""
        if self._closing:
            return "closing"
        return "running" if self._started else "starting"

    def stats(self) -> AlarmStats:
        """Totals for metrics."""
        lags = sorted(self._lags)
        active, paused, scheduled = self._counts_of_alarms()
        return AlarmStats(
            alarms=len(self._entries),
            active=active,
            paused=paused,
            scheduled=scheduled,
            in_flight=sum(1 for t in self._tasks if not t.done()),
            fires=self._counts["fires"],
            delivered=self._counts["delivered"],
            not_delivered=self._counts["not_delivered"],
            retries=self._counts["retries"],
            throttled=self._counts["throttled"],
            triggers_gone=self._counts["triggers_gone"],
            missed_ticks=self._counts["missed_ticks"],
            catchup_fires=self._counts["catchup_fires"],
            dropped_ticks=self._counts["dropped_ticks"],
            persist_failures=self._counts["persist_failures"],
            internal_errors=self._counts["internal_errors"],
            lag_samples=len(lags),
            lag_p50_ms=_percentile(lags, 50),
            lag_p99_ms=_percentile(lags, 99),
            lag_max_ms=lags[-1] if lags else None,
            held_back=len(self._fenced) + len(self._unowned),
            behind_ms=self._behind_ms(),
        )

    def _behind_ms(self) -> float:
        """How late the earliest tick still waiting in the heap is: 0 while every due tick
        has been launched. Ticks wait there when all fire slots are taken, so this grows when
        the service falls behind (after a restart's catch-up, or under more load than it can
        fire) and falls back to 0 once it has caught up."""
        item = self._peek()
        if item is None:
            return 0.0
        return max(0.0, (self.now() - item[0]).total_seconds() * 1000.0)

    # -- loading and misfires -----------------------------------------------------------------

    async def rebalance(self) -> None:
        """The shards this process owns changed (a scheduler joined or left): drop the alarms
        no longer owned, their pending state written first (fires in flight finish, their
        bookkeeping is dropped), and take up the owned alarms not held, from the store.

        A taken-up alarm's ticks are `unsure`: their fires check the fire ledger (the tick's
        deterministic activation id), so a tick its former owner fired is not fired again, and
        ticks missed meanwhile go through its misfire policy. Store errors propagate after the
        release (the caller retries). Without `owns` there is nothing to do.
        """
        self._require_started()
        if self._owns is None:
            return
        # Not under the create lock: a scan of every alarm takes seconds at 100,000 alarms,
        # and a create racing it is safe (a page read before it lacks the alarm, one after
        # it is skipped as held; the store refuses a second create either way).
        async with self._rebalance_lock:
            began = time.perf_counter()
            released = await self._release_unowned()
            now = self.now()
            self._unsure_until = max(self._unsure_until, now + self._handoff_margin)
            summary = _RestoreSummary()
            held = len(self._entries)
            self._rearm_held_back(self._unowned, now, summary)  # still held: owned again
            if not self._fenced:
                self._holding_back = False  # the next episode is logged again
            pages = self._store.scan_text(
                ALARMS_COLLECTION, ALARMS_ROOT, prefix_match=True, page=4096
            )
            with _collector_paused():
                async for page in pages:
                    self._restore_page(page, now, summary, bulk=False)
            self._decode_soon()
            summary.log()
            log.info(
                "alarm shards rebalanced in %.2f s: %d alarms released, %d taken up, %d held",
                time.perf_counter() - began,
                released,
                len(self._entries) - held,
                len(self._entries),
            )

    async def _release_unowned(self) -> int:
        """Drop every held alarm whose shard is not owned any more; write the dropped ones'
        unwritten state (a failed write only means the new owner fires those ticks again with
        their same ids, which the ledger drops)."""
        owns = self._owns
        assert owns is not None
        gone = [e for e in self._entries.values() if not owns(*_namespace_and_trigger(e.id))]
        unwritten: list[_Entry] = []
        for entry in gone:
            alarm_id = entry.id
            if self._locks.held(alarm_id):  # a user change is half done: let it finish first
                async with self._locks.hold(alarm_id):
                    pass
            if self._entries.get(alarm_id) is not entry:
                continue
            if self._dirty.get(alarm_id) is entry:
                unwritten.append(entry)
            self._forget(entry)
        async with self._write_lock:  # after any batch in flight: revisions are current
            for start in range(0, len(unwritten), self._write_batch):
                await self._write_released(unwritten[start : start + self._write_batch])
        return len(gone)

    async def _write_released(self, entries: Sequence[_Entry]) -> None:
        writes = [
            EntityWrite(
                ALARMS_COLLECTION,
                store_path(e.alarm.namespace),
                e.alarm.trigger,
                e.alarm.to_doc(),
                e.revision,
            )
            for e in entries
        ]
        try:
            results = await self._store.put_many(writes)
        except Exception as exc:
            self._counts["persist_failures"] += 1
            log.warning(
                "writing %d released alarms failed (%s); their new owner fires their last "
                "ticks again with the same activation ids (the ledger drops duplicates)",
                len(entries),
                exc,
            )
            return
        conflicts = sum(1 for r in results if isinstance(r, ConflictError))
        if conflicts:  # their new owner wrote them already: its version stands
            log.info("%d released alarms were written by their new owner already", conflicts)

    async def _load_all(self) -> _RestoreSummary:
        """Read every alarm a page at a time and arm it: a page's documents are dropped once
        its alarms are built, so the decoded documents never sit in memory all at once."""
        now = self.now()
        summary = _RestoreSummary()
        pages = aiter(
            self._store.scan_text(ALARMS_COLLECTION, ALARMS_ROOT, prefix_match=True, page=4096)
        )
        # The store reads the next page (in its thread) while this one's alarms are built.
        fetching = asyncio.ensure_future(anext(pages, None))
        while (page := await fetching) is not None:
            fetching = asyncio.ensure_future(anext(pages, None))
            self._restore_page(page, now, summary)
        heapq.heapify(self._heap)  # once, instead of a push per alarm
        return summary

    def _restore(
        self, entry: _Entry, now: datetime, summary: _RestoreSummary, *, bulk: bool
    ) -> None:
        """At start (`bulk`: the caller heapifies once) or on adopting another writer's
        version: arm the alarm's persisted next tick as it is. The misfire policy is applied
        when that tick comes up (`_replan`), so a start does no schedule arithmetic for the
        alarms that missed nothing, and spreads it out for those that did."""
        alarm = entry.alarm
        if not alarm.status.active or alarm.status.paused:
            return
        tick = alarm.next_tick if alarm.next_tick is not None else alarm.next_tick_after(now)
        if tick is None:
            entry.alarm = self._ended(replace(alarm, next_tick=None), Plan(None), now)
            summary.ended.append(alarm.id)
            self._mark_dirty(entry)
            return
        due = alarm.due_at(tick)
        if due < now - self._grace:
            summary.overdue.append(entry.id)
        self._arm(entry, tick, catchup=None, heap_push=not bulk, due=due)

    def _replan(self, entry: _Entry, tick: datetime, now: datetime) -> None:
        """A restored alarm's tick came up late: apply its misfire policy, then re-arm it (the
        tick to fire is due, so the timer takes it at once) or end it."""
        alarm = entry.alarm
        plan = plan_next(alarm, tick, now, grace_s=self._grace_s)
        self._count_plan(alarm, plan)
        if plan.tick is None:
            entry.alarm = self._ended(replace(alarm, next_tick=None), plan, now)
            self._mark_dirty(entry)
            reason = entry.alarm.status.reason
            log.info("alarm %s ended: %s", alarm.id, reason.message if reason else "")
            return
        if plan.tick != alarm.next_tick:
            entry.alarm = replace(alarm, next_tick=plan.tick)
            self._mark_dirty(entry)
        self._arm(entry, plan.tick, catchup=plan.catchup)

    def _count_plan(self, alarm: Alarm, plan: Plan) -> None:
        """Count missed ticks (per-alarm lines at debug level: after an outage there may be
        one for every alarm; the counters and the start summary tell the story)."""
        if plan.dropped:
            self._counts["dropped_ticks"] += plan.dropped
            self._counts["missed_ticks"] += plan.dropped
            log.debug(
                "alarm %s: %s%d missed ticks dropped (misfire policy %s)",
                alarm.id,
                "about " if plan.capped else "",
                plan.dropped,
                alarm.misfire,
            )
        if plan.catchup:
            log.debug("alarm %s: missed tick %s fires late", alarm.id, plan.tick)

    def _ended(
        self, alarm: Alarm, plan: Plan, now: datetime, *, failure: str | None = None
    ) -> Alarm:
        """The alarm, inactive, with the reason it has no more ticks.

        `failure`: why the last tick's fire was given up (it matters for a once-alarm).
        """
        if alarm.kind is AlarmKind.ONCE and failure is not None:
            reason = StatusReason(
                "AUTO", f"Automatically disabled after failing to fire the trigger: {failure}"
            )
        elif plan.dropped and (alarm.kind is AlarmKind.ONCE or alarm.last_fire is None):
            reason = StatusReason(
                "AUTO",
                f"Automatically disabled: {plan.dropped} missed tick(s) dropped by misfire "
                f"policy {alarm.misfire} and no ticks are left",
            )
        else:
            reason = alarm.end_reason()
        return alarm.with_status(now, active=False, reason=reason)

    # -- timing -------------------------------------------------------------------------------

    def _arm(
        self,
        entry: _Entry,
        tick: datetime,
        *,
        catchup: bool | None,
        heap_push: bool = True,
        due: datetime | None = None,
    ) -> None:
        """Schedule the alarm's tick. `catchup` None: a restored tick, not planned yet (see
        `_replan`). `heap_push=False` only appends (start() heapifies once). `due`: the
        tick's due instant when the caller has it already."""
        entry.token += 1
        entry.armed = True
        if due is None:
            due = entry.config.due_at(tick)
        item = (due, next(self._seq), entry.id, entry.token, tick, catchup)
        if not heap_push:
            self._heap.append(item)
            return
        heapq.heappush(self._heap, item)
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._entries):
            self._heap = [item for item in self._heap if self._valid(item)]
            heapq.heapify(self._heap)
        self._wake.set()

    def _valid(self, item: _HeapItem) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.token == item[3]

    def _peek(self) -> _HeapItem | None:
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def _counts_of_alarms(self) -> tuple[int, int, int]:
        """(active, paused, scheduled) in one walk of the alarms: a metrics scrape or a UI
        refresh holds the event loop, and fires, that long (2.5 ms at 20,000 alarms). Two
        walks of the alarms and one of the heap (up to 4 items per alarm) took 9.2 ms."""
        active = paused = scheduled = 0
        for entry in self._entries.values():
            if entry.paused:
                paused += 1
            elif entry.active:
                active += 1
            if entry.armed:
                scheduled += 1
        return active, paused, scheduled

    async def _run_timer(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                delay = self._launch_due()
            except Exception:  # a bug must not stop every alarm: log, count, go on
                self._counts["internal_errors"] += 1
                log.exception("alarm timer failed; continuing")
                delay = 0.1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _launch_due(self) -> float:
        """Start a fire for due ticks, at most `max_concurrent_fires` in their first attempt
        at once (the rest wait in the heap, not as tasks: thousands of tasks queued on one
        semaphore make every release slow); the seconds until the timer should look again."""
        now = self.now()
        if self._fenced and self._fence_open():
            self._rearm_held_back(self._fenced, now, _RestoreSummary())
        late_line = now - timedelta(seconds=self._grace_s)
        item = self._peek()
        while item is not None and item[0] <= now:
            if self._first_attempts >= self._max_fires:
                return self._max_sleep_s  # a fire ending its first attempt wakes the timer
            heapq.heappop(self._heap)
            entry = self._entries[item[2]]
            entry.token += 1  # this tick is taken; nothing else may fire it
            entry.armed = False
            if not self._decoded(entry):
                item = self._peek()
                continue
            if item[5] is None and item[0] < late_line:
                self._replan(entry, item[4], now)
            elif not self._hold_back(entry):
                self._launch(entry, tick=item[4], due=item[0], catchup=bool(item[5]))
            item = self._peek()
        sleep = self._max_sleep_s if not self._fenced else self._fence_retry_s
        if item is None:
            return sleep
        return max(0.0, min(sleep, (item[0] - now).total_seconds()))

    # -- shards and fencing -------------------------------------------------------------------

    def owns(self, namespace: str, trigger: str) -> bool:
        """Whether this process owns the alarm's shard now (always, without `owns`)."""
        return self._owns is None or self._owns(namespace, trigger)

    def _fence_open(self) -> bool:
        if self._may_fire is None:
            return True
        try:
            valid = self._may_fire()
        except Exception:  # a broken fence closes: firing without it could fire twice
            if not self._fence_broken:
                log.exception("the alarm fence (may_fire) failed; holding ticks back")
            self._fence_broken = True
            return False
        self._fence_broken = False
        return valid

    def _may_still_fire(self, alarm: Alarm) -> bool:
        return self._fence_open() and self.owns(alarm.namespace, alarm.trigger)

    def _hold_back(self, entry: _Entry) -> bool:
        """Right before a fire: keep the due tick when this process may not fire it (its lease
        is not valid, or the alarm's shard is not its own any more). The tick stays with the
        alarm, `unsure`, for whoever may fire it: this process once the fence opens again or
        the shard comes back, or the shard's new owner (which checks the ledger)."""
        alarm = entry.config
        if not self._fence_open():
            parked, why = self._fenced, "this scheduler's lease is not valid (fencing)"
        elif not self.owns(alarm.namespace, alarm.trigger):
            parked, why = self._unowned, "this scheduler no longer owns their shards"
        else:
            return False
        entry.unsure = True
        parked[alarm.id] = entry
        if not self._holding_back:
            self._holding_back = True
            log.warning("alarm ticks are held back, not fired: %s", why)
        return True

    def _rearm_held_back(
        self, parked: dict[str, _Entry], now: datetime, summary: _RestoreSummary
    ) -> None:
        """Arm held-back alarms again at their kept tick; the misfire policy applies when it
        comes up (it is late by then)."""
        entries = list(parked.values())
        parked.clear()
        for entry in entries:
            if self._entries.get(entry.id) is entry:
                self._restore(entry, now, summary, bulk=False)
        if entries and self._holding_back:
            self._holding_back = False
            log.info("alarm ticks fire again (%d alarms were held back)", len(entries))

    def _launch(self, entry: _Entry, *, tick: datetime, due: datetime, catchup: bool) -> None:
        self._first_attempts += 1
        task = asyncio.create_task(
            self._fire_tick(entry, tick, due, catchup, entry.generation),
            name=f"squall-alarm-fire {entry.id} {tick.isoformat()}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- firing -------------------------------------------------------------------------------

    async def _fire_tick(
        self, entry: _Entry, tick: datetime, due: datetime, catchup: bool, generation: int
    ) -> None:
        alarm = entry.config  # not `alarm`: that would build the alarm anew on every fire
        activation_id = activation_id_for(alarm.id, tick)
        # Whether another run may have fired this tick, so the fire asks the ledger: a restored
        # tick (unsure until it first fires) or any tick due before this process took the alarm
        # (start, or a shard's handoff). A catch-up tick this process planned itself after its
        # own fire, due later than that, is neither: only this process fires it, once. Asking
        # the ledger for every catch-up made each fire dearer exactly while the service was
        # behind, so near its capacity it fell further behind instead of catching up.
        maybe_fired = entry.unsure or due <= self._unsure_until
        entry.unsure = False
        try:
            result, fired_at, attempts = await self._deliver(
                alarm, tick, activation_id, maybe_fired
            )
        except _HeldBack:
            # The tick stays the alarm's next one, unsure (a user change meanwhile armed its
            # own); armed again at once if this process may fire it again already.
            current = self._entries.get(alarm.id) is entry and entry.generation == generation
            if current and not self._hold_back(entry):
                self._restore(entry, self.now(), _RestoreSummary(), bulk=False)
            return
        if result.outcome is FireOutcome.THROTTLED:
            await self._record_throttled(alarm, tick, activation_id, result.message)
        # Let the other ticks due at this instant make their fire calls before this one does
        # its bookkeeping: it keeps their lag down.
        await asyncio.sleep(0)
        lag_ms = (fired_at - due).total_seconds() * 1000.0
        record = FireRecord(
            alarm.id, tick, due, fired_at, lag_ms, activation_id, result.outcome, attempts, catchup
        )
        self._recent.append(record)
        self._count_fire(record, result)
        log.debug(
            "alarm %s tick %s fired: %s (lag %.1f ms, %d attempts, id %s)",
            alarm.id,
            tick.isoformat(),
            result.outcome.value,
            lag_ms,
            attempts,
            activation_id,
        )
        delete_mode: DeleteAfterFire | None = None
        try:
            if self._locks.held(alarm.id):  # a user change is half done: let it finish first
                async with self._locks.hold(alarm.id):
                    delete_mode = self._after_fire_of_current(entry, record, result, generation)
            else:
                delete_mode = self._after_fire_of_current(entry, record, result, generation)
        except Exception:
            self._counts["internal_errors"] += 1
            log.exception("alarm %s: recording the fire of tick %s failed", alarm.id, tick)
            self._rearm_after_error(entry)
            return
        if delete_mode is not None:
            await self._delete_after_fire(entry.alarm, delete_mode)

    async def _record_throttled(
        self, alarm: Alarm, tick: datetime, activation_id: str, message: str
    ) -> None:
        if self._on_throttled is None:
            return
        try:
            await self._on_throttled(alarm, tick, activation_id, message)
        except Exception:
            log.exception("alarm %s: tick %s was throttled and could not be recorded",
                          alarm.id, tick.isoformat())  # fmt: skip

    def _rearm_after_error(self, entry: _Entry) -> None:
        """After a bug in the bookkeeping: keep the alarm going from its next tick after now."""
        try:
            alarm = entry.alarm
            current = self._entries.get(alarm.id) is entry
            if current and alarm.status.active and not alarm.status.paused:
                tick = alarm.next_tick_after(self.now())
                if tick is not None:
                    self._arm(entry, tick, catchup=False)
        except Exception:
            log.exception("alarm %s could not be re-armed; it stays idle", entry.id)

    async def _deliver(
        self, alarm: Alarm, tick: datetime, activation_id: str, maybe_fired: bool
    ) -> tuple[FireResult, datetime, int]:
        """Fire with retries (same activation id every time); the first attempt's time.

        The launch slot (`_first_attempts`) is given back when the first attempt ends: retries
        wait on the semaphore, so a throttled namespace does not hold up other alarms' ticks.
        """
        slot_held = True
        try:
            failures = throttles = attempts = 0
            first_at: datetime | None = None
            while True:  # bounded by the retry policy's attempt counts
                result, at = await self._attempt(alarm, tick, activation_id, maybe_fired)
                first_at = first_at or at
                attempts += 1
                maybe_fired = True  # a failed attempt may still have fired
                if slot_held:
                    slot_held = False
                    self._end_first_attempt()
                if result.outcome is FireOutcome.THROTTLED:
                    self._counts["throttled"] += 1
                    throttles += 1
                    if throttles >= self._retry.throttled_attempts:
                        return result, first_at, attempts
                    delay = self._retry.throttled_delay(throttles, result.retry_after_s)
                elif result.outcome is FireOutcome.FAILED:
                    failures += 1
                    if failures >= self._retry.failed_attempts:
                        return result, first_at, attempts
                    delay = self._retry.failed_delay(failures)
                else:
                    return result, first_at, attempts
                self._counts["retries"] += 1
                log.info(
                    "alarm %s tick %s: %s (%s); retry %d in %.1f s",
                    alarm.id,
                    tick.isoformat(),
                    result.outcome.value,
                    result.message,
                    attempts,
                    delay,
                )
                await asyncio.sleep(delay)
                if not self._may_still_fire(alarm):
                    raise _HeldBack  # the retry is no longer this process's to make
        finally:
            if slot_held:
                self._end_first_attempt()

    async def _attempt(
        self, alarm: Alarm, tick: datetime, activation_id: str, maybe_fired: bool
    ) -> tuple[FireResult, datetime]:
        """One call of the fire callback; errors and timeouts become FAILED results."""
        async with self._semaphore:
            at = self.now()
            try:
                async with asyncio.timeout(self._fire_timeout_s):
                    result = await self._fire(alarm, tick, activation_id, maybe_fired=maybe_fired)
            except TimeoutError:
                log.warning(
                    "alarm %s: fire callback did not return in %.1f s",
                    alarm.id,
                    self._fire_timeout_s,
                )
                result = FireResult.failed(f"no answer in {self._fire_timeout_s} s")
            except Exception as exc:
                log.warning(
                    "alarm %s: fire callback raised %s: %s", alarm.id, type(exc).__name__, exc
                )
                result = FireResult.failed(f"{type(exc).__name__}: {exc}")
        return result, at

    def _end_first_attempt(self) -> None:
        self._first_attempts -= 1
        # Wake the timer only when a due tick waits for this slot, not after every fire.
        if self._first_attempts == self._max_fires - 1 and self._heap:
            self._wake.set()

    def _count_fire(self, record: FireRecord, result: FireResult) -> None:
        self._counts["fires"] += 1
        if result.delivered:
            self._counts["delivered"] += 1
        elif result.outcome is FireOutcome.TRIGGER_GONE:
            self._counts["triggers_gone"] += 1
        else:
            self._counts["not_delivered"] += 1
        if record.catchup:
            self._counts["catchup_fires"] += 1
            self._counts["missed_ticks"] += 1
        else:
            self._lags.append(record.lag_ms)

    def _after_fire_of_current(
        self, entry: _Entry, record: FireRecord, result: FireResult, generation: int
    ) -> DeleteAfterFire | None:
        if self._entries.get(entry.id) is not entry:
            return None  # deleted while firing
        return self._after_fire(entry, record, result, generation)

    def _after_fire(
        self, entry: _Entry, record: FireRecord, result: FireResult, generation: int
    ) -> DeleteAfterFire | None:
        """Record the fire, pick the next tick, re-arm; the state is written in the next batch.

        Never awaits, so no other change of the alarm can interleave.
        """
        now = self.now()
        if result.outcome is FireOutcome.TRIGGER_GONE or generation != entry.generation:
            self._after_fire_gone_or_changed(entry, record, result, now)
            return None
        # The common case, a fire by the alarm's current configuration: the fire state is kept
        # beside the alarm (see _FireState), so the alarm is not copied on every fire.
        current = entry.config
        fires_count = entry.fires_count + (1 if result.delivered else 0)
        planned = current
        if current.max_triggers is not None:  # the count matters to the schedule only then
            planned = replace(current, fires_count=fires_count)
        if current.kind is AlarmKind.ONCE:
            plan = Plan(None)
        else:
            candidate = planned.next_tick_after(record.tick)
            plan = plan_next(planned, candidate, now, grace_s=self._grace_s)
            self._count_plan(planned, plan)
        entry.record_fire(
            (
                record.tick,
                record.fired_at,
                record.lag_ms,
                record.activation_id,
                record.outcome.value,
                record.attempts,
                record.catchup,
                fires_count,
                plan.tick,
            )
        )
        if plan.tick is None:
            return self._after_last_fire(entry, plan, result, now)
        self._mark_dirty(entry)
        self._arm(entry, plan.tick, catchup=plan.catchup, due=plan.due)
        return None

    def _after_fire_gone_or_changed(
        self, entry: _Entry, record: FireRecord, result: FireResult, now: datetime
    ) -> None:
        """After a fire whose trigger is gone, or one made by a configuration changed meanwhile."""
        current = entry.alarm
        last = LastFire(
            record.tick,
            record.fired_at,
            record.lag_ms,
            record.activation_id,
            record.outcome.value,
            record.attempts,
            record.catchup,
        )
        if result.outcome is FireOutcome.TRIGGER_GONE:
            code = result.status_code or 404
            reason = StatusReason("AUTO", msg_status_code(code), code)
            entry.alarm = replace(current, last_fire=last, next_tick=None).with_status(
                now, active=False, reason=reason
            )
            self._bump(entry)
            log.warning("alarm %s disabled: %s (%s)", current.id, reason.message, result.message)
            self._mark_dirty(entry)
            return
        # The alarm was updated, paused or resumed while this tick fired: the new
        # configuration has its own next tick already; only record the fire.
        entry.alarm = replace(current, last_fire=last)
        self._mark_dirty(entry)

    def _after_last_fire(
        self, entry: _Entry, plan: Plan, result: FireResult, now: datetime
    ) -> DeleteAfterFire | None:
        """The alarm fired its last tick: it ends (disabled, with the reason)."""
        fired = entry.alarm
        entry.alarm = self._ended(
            fired,
            plan,
            now,
            failure=None if result.delivered else (result.message or result.outcome.value),
        )
        log.info(
            "alarm %s ended: %s",
            fired.id,
            entry.alarm.status.reason.message if entry.alarm.status.reason else "",
        )
        self._mark_dirty(entry)
        if (
            fired.kind is AlarmKind.ONCE
            and result.delivered
            and fired.delete_after_fire != "false"
            and self._on_delete_after_fire is not None
        ):
            return fired.delete_after_fire
        return None

    async def _delete_after_fire(self, alarm: Alarm, mode: DeleteAfterFire) -> None:
        assert self._on_delete_after_fire is not None
        try:
            await self._on_delete_after_fire(alarm, mode)
        except Exception:
            log.exception(
                "alarm %s: deleting the trigger after its once-fire failed; the "
                "alarm stays, disabled",
                alarm.id,
            )
            return
        try:
            await self.delete(alarm.namespace, alarm.trigger)
        except Exception:
            log.exception(
                "alarm %s: removing the alarm after its trigger was deleted failed", alarm.id
            )

    # -- persistence --------------------------------------------------------------------------

    def _mark_dirty(self, entry: _Entry) -> None:
        """The alarm's state changed after a fire or restore: write it in the next batch."""
        self._dirty[entry.id] = entry
        self._dirty_event.set()

    async def _write_loop(self) -> None:
        """Write changed alarms in batches (one transaction each), a few ms after they change.

        Store failures never stop the timer: alarms keep firing from memory and the writes are
        retried with backoff. A crash before a write only means the unwritten ticks are fired
        again at the next start, with their same activation ids (dropped by the ledger).
        """
        delay = self._retry.base_delay_s
        while True:  # ends when closing and nothing is left (or the store keeps failing)
            await self._dirty_event.wait()
            if not self._fires_done and len(self._dirty) < self._write_batch:
                await asyncio.sleep(self._write_delay_s)  # let a batch gather
            self._dirty_event.clear()
            written = await self._write_dirty()
            if self._fires_done and (not written or not self._dirty):
                return
            if written:
                delay = self._retry.base_delay_s
                if self._dirty:
                    self._dirty_event.set()
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.max_delay_s)
            self._dirty_event.set()

    async def _write_dirty(self) -> bool:
        """Write one batch of changed alarms; False when the store failed."""
        async with self._write_lock:
            batch: list[_Entry] = []
            while self._dirty and len(batch) < self._write_batch:
                # popitem: O(1); popping the first key repeatedly is quadratic in a dict
                alarm_id, entry = self._dirty.popitem()
                if self._entries.get(alarm_id) is entry:
                    batch.append(entry)
            if not batch:
                return True
            try:  # a bug building a document must not end the writer either: re-queued too
                writes = [
                    EntityWrite(
                        ALARMS_COLLECTION,
                        store_path(entry.config.namespace),
                        entry.config.trigger,
                        entry.doc(),
                        entry.revision,
                    )
                    for entry in batch
                ]
                results = await self._store.put_many(writes)
            except Exception as exc:
                self._write_failed(batch, exc)
                return False
            self._write_failing = False
            conflicts = []
            for entry, result in zip(batch, results, strict=True):
                if isinstance(result, ConflictError):
                    conflicts.append(entry)
                else:
                    entry.revision = result.revision
            for entry in conflicts:
                try:
                    await self._reconcile(entry)
                except Exception:  # e.g. an unreadable stored document: keep firing from memory
                    self._counts["internal_errors"] += 1
                    log.exception("alarm %s: resolving a write conflict failed", entry.id)
            return True

    def _write_failed(self, batch: Sequence[_Entry], exc: Exception) -> None:
        self._counts["persist_failures"] += 1
        self._write_failing = True
        for entry in batch:  # newer changes made meanwhile stay queued as they are
            self._dirty.setdefault(entry.id, entry)
        log.warning(
            "writing the state of %d alarms failed (%s: %s); firing goes on from memory and "
            "the write is retried",
            len(batch),
            type(exc).__name__,
            exc,
        )

    async def _reconcile(self, entry: _Entry) -> None:
        """After a revision conflict (someone else wrote the alarm): write again on top of the
        stored revision when it is our own configuration, else adopt theirs. Holds the write
        lock."""
        alarm = entry.alarm
        try:
            stored = await self._store.get(
                ALARMS_COLLECTION, store_path(alarm.namespace), alarm.trigger
            )
        except Exception as exc:
            self._counts["persist_failures"] += 1
            log.warning("alarm %s: reading it back failed (%s)", alarm.id, exc)
            self._mark_dirty(entry)
            return
        if stored is None:
            log.warning(
                "alarm %s was deleted from the store by someone else; forgetting it", alarm.id
            )
            self._forget(entry)
            return
        theirs = Alarm.from_doc(stored.doc)
        entry.revision = stored.revision
        if theirs.config_version == alarm.config_version:
            self._mark_dirty(entry)  # our own earlier write landed after all: write again
            return
        log.warning(
            "alarm %s was changed in the store by someone else; adopting that version", alarm.id
        )
        if alarm.last_fire and (
            theirs.last_fire is None or theirs.last_fire.tick < alarm.last_fire.tick
        ):
            theirs = replace(theirs, last_fire=alarm.last_fire)
        entry.alarm = theirs
        entry.unsure = True  # the other writer may have fired its next tick
        self._bump(entry)
        summary = _RestoreSummary()
        self._restore(entry, self.now(), summary, bulk=False)
        summary.log()

    async def _write(self, entry: _Entry, alarm: Alarm) -> None:
        """A user change: written before it takes effect; store errors propagate."""
        path = store_path(alarm.namespace)
        async with self._write_lock:  # no batch holds an older revision of this alarm now
            try:
                stored = await self._store.put(
                    ALARMS_COLLECTION, path, alarm.trigger, alarm.to_doc(), entry.revision
                )
            except ConflictError:
                current = await self._store.get(ALARMS_COLLECTION, path, alarm.trigger)
                if current is None:
                    raise NotFoundError(f"trigger {alarm.id} has no alarm") from None
                stored = await self._store.put(
                    ALARMS_COLLECTION, path, alarm.trigger, alarm.to_doc(), current.revision
                )
            entry.alarm = alarm
            entry.revision = stored.revision
            self._dirty.pop(alarm.id, None)  # the user's version includes the queued state

    # -- helpers ------------------------------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started or self._closing:
            raise RuntimeError("the alarm service is not running (call start() first)")

    def _entry(self, namespace: str, trigger: str) -> _Entry:
        self._require_started()
        if not self.owns(namespace, trigger):
            raise NotOwner(namespace, trigger)
        entry = self._entries.get(f"{namespace}/{trigger}")
        if entry is None or not self._decoded(entry):
            raise NotFoundError(f"trigger {namespace}/{trigger} has no alarm")
        return entry

    def _check_current(self, entry: _Entry) -> None:
        if self._entries.get(entry.id) is not entry:
            raise NotFoundError(f"trigger {entry.id} has no alarm")

    def _bump(self, entry: _Entry) -> None:
        """A user change: fires in flight must not re-arm; the armed tick is void."""
        entry.generation += 1
        entry.token += 1
        entry.armed = False

    def _forget(self, entry: _Entry) -> None:
        self._bump(entry)
        if self._entries.get(entry.id) is entry:
            del self._entries[entry.id]
        if self._dirty.get(entry.id) is entry:
            del self._dirty[entry.id]
        self._fenced.pop(entry.id, None)
        self._unowned.pop(entry.id, None)


def _namespace_and_trigger(alarm_id: str) -> tuple[str, str]:
    namespace, _, trigger = alarm_id.partition("/")  # neither name may hold a "/"
    return namespace, trigger


def _describe(alarm: Alarm) -> str:
    if alarm.kind is AlarmKind.ONCE:
        return f"once at {alarm.date}"
    if alarm.kind is AlarmKind.INTERVAL:
        return f"every {alarm.minutes} min from {alarm.start_date}"
    return f"cron '{alarm.cron}' in {alarm.timezone or 'UTC'}"


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]
