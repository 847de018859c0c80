"""`AlarmAdmin` for a controller in a cluster: each call goes to the scheduler that owns the
alarm's shard, at its internal endpoint (`squall.alarms.routes`).

Ownership moves while schedulers join and leave, so a call may reach a scheduler that just gave
the shard up (409), or one that died (unreachable), or find no owner at all for a moment. Then
the owner is looked up again (`owner_url`, the lead's placement over the membership) and the
call retried with a short backoff, for at most `retry_for_s` (5 s: a lease TTL plus a
rebalance). After that `AlarmsUnavailable` says so, and the controller answers 503: retry.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from squall.abc import AlarmAdmin, JSONDict
from squall.alarms.routes import ALARMS_PATH
from squall.alarms.schedule import AlarmValidationError
from squall.cluster.internal import InternalCallFailed, InternalClient
from squall.errors import ConflictError, DependencyUnavailable, NotFoundError

__all__ = ["AlarmsUnavailable", "OwnerUrl", "RemoteAlarms"]

# owner_url(namespace, trigger): the base URL of the scheduler owning the alarm's shard now,
# None when no live scheduler owns it.
OwnerUrl = Callable[[str, str], str | None]


class AlarmsUnavailable(DependencyUnavailable):
    """No scheduler could answer for the alarm's shard within the retry budget."""


class _TryAgain(Exception):
    """This attempt found no owner, a former owner, or an unreachable one."""


class RemoteAlarms(AlarmAdmin):
    """The alarm feed lifecycle over the owning schedulers' internal endpoints."""

    def __init__(
        self,
        client: InternalClient,
        owner_url: OwnerUrl,
        *,
        scheduler_urls: Callable[[], Collection[str]] | None = None,
        retry_for_s: float = 5.0,
        first_backoff_s: float = 0.05,
        max_backoff_s: float = 0.5,
    ) -> None:
        """`scheduler_urls`: every live scheduler's base URL, for `list` (a namespace's alarms
        are spread over every shard); without it `list` is unavailable."""
        self._client = client
        self._owner_url = owner_url
        self._scheduler_urls = scheduler_urls
        self._retry_for_s = retry_for_s
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s

    async def create(
        self, namespace: str, trigger: str, kind: str, params: Mapping[str, Any]
    ) -> JSONDict:
        body = {"kind": kind, "params": dict(params)}
        return _view(await self._call("create", namespace, trigger, body))

    async def read(self, namespace: str, trigger: str) -> JSONDict | None:
        try:
            return _view(await self._call("read", namespace, trigger))
        except NotFoundError:
            return None

    async def update(self, namespace: str, trigger: str, params: Mapping[str, Any]) -> JSONDict:
        body = {"params": dict(params)}
        return _view(await self._call("update", namespace, trigger, body))

    async def delete(self, namespace: str, trigger: str) -> bool:
        answer = await self._call("delete", namespace, trigger)
        return bool(answer["deleted"])

    async def pause(self, namespace: str, trigger: str) -> JSONDict:
        return _view(await self._call("pause", namespace, trigger))

    async def resume(self, namespace: str, trigger: str) -> JSONDict:
        return _view(await self._call("resume", namespace, trigger))

    async def list(self, namespace: str) -> builtins.list[JSONDict]:
        """Every scheduler's alarms of the namespace, merged (one per trigger) by name."""
        if self._scheduler_urls is None:
            raise AlarmsUnavailable("listing alarms needs the schedulers' addresses")
        urls = builtins.list(self._scheduler_urls())
        path = f"{ALARMS_PATH}/list"
        try:
            answers = await asyncio.gather(
                *(self._client.call(url, path, {"namespace": namespace}) for url in urls)
            )
        except (DependencyUnavailable, InternalCallFailed) as exc:
            raise AlarmsUnavailable(f"listing the alarms of {namespace} failed: {exc}") from exc
        by_name: dict[str, JSONDict] = {}
        for answer in answers:
            for view in answer["alarms"]:
                by_name.setdefault(view["config"]["name"], view)
        return [by_name[name] for name in sorted(by_name)]

    async def _call(
        self, operation: str, namespace: str, trigger: str, extra: JSONDict | None = None
    ) -> Any:
        """One operation at the alarm's owner, re-resolving the owner and retrying (bounded)
        while ownership moves; errors mapped back to the exceptions the local service raises."""
        body = {"namespace": namespace, "trigger": trigger, **(extra or {})}
        deadline = time.monotonic() + self._retry_for_s
        backoff = self._first_backoff_s
        while True:  # bounded by the deadline
            try:
                return await self._attempt(operation, namespace, trigger, body)
            except _TryAgain as why:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AlarmsUnavailable(
                        f"no scheduler owns the shard of the alarm of trigger "
                        f"/{namespace}/{trigger} now ({why}); retry shortly"
                    ) from None
                await asyncio.sleep(min(backoff, left))
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _attempt(self, operation: str, namespace: str, trigger: str, body: JSONDict) -> Any:
        url = self._owner_url(namespace, trigger)
        if url is None:
            raise _TryAgain("no live scheduler holds it")
        try:
            return await self._client.call(url, f"{ALARMS_PATH}/{operation}", body)
        except DependencyUnavailable as exc:
            raise _TryAgain(f"its owner at {url} is unreachable") from exc
        except InternalCallFailed as exc:
            raise _failure(exc, url) from exc


def _view(answer: Any) -> JSONDict:
    if not isinstance(answer, dict):
        raise AlarmsUnavailable(f"a scheduler answered with {type(answer).__name__}, not a view")
    return answer


def _failure(exc: InternalCallFailed, url: str) -> Exception:
    """The scheduler's answer as the exception the local AlarmService would raise."""
    if exc.status == 409:  # not (or no longer) the owner: look it up again
        return _TryAgain(f"the scheduler at {url} does not own it any more")
    if exc.status == 503:  # its store or service is not available right now
        return _TryAgain(f"the scheduler at {url} is not ready: {exc}")
    if exc.status == 404:
        return NotFoundError(str(exc))
    if exc.status == 412:
        return ConflictError(str(exc))
    if exc.status == 400:
        return AlarmValidationError(str(exc))
    if exc.status == 401:
        return AlarmsUnavailable(
            f"the scheduler at {url} refused this controller's cluster token; set the same "
            f"SQUALL_CLUSTER_TOKEN on every member"
        )
    return AlarmsUnavailable(f"the scheduler at {url} failed: HTTP {exc.status}: {exc}")
