"""The Celery side of the comparison: an app with one trivial task, the peer of Squall's
trivial action (`def main(args): return {'ok': True}`).

The worker runs it as `python -m celery -A bench.celery_peer worker ...` (bench/celery_bench.py
starts it); broker and result backend come from BENCH_CELERY_BROKER and BENCH_CELERY_BACKEND.
Clients do not import this module: they send the task by name (`send_task`), as a service
calling a Celery deployment would.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

TASK_NAME = "bench.hello"
BROKER_ENV = "BENCH_CELERY_BROKER"
BACKEND_ENV = "BENCH_CELERY_BACKEND"


def make_app(broker: str, backend: str) -> Any:
    """A Celery app on Redis, JSON only (as Squall's REST bodies), results kept an hour."""
    celery = importlib.import_module("celery")
    app = celery.Celery("squall-bench", broker=broker, backend=backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def hello() -> dict[str, bool]:
    return {"ok": True}


app: Any = None
if os.environ.get(BROKER_ENV) and os.environ.get(BACKEND_ENV):  # the worker's import
    app = make_app(os.environ[BROKER_ENV], os.environ[BACKEND_ENV])
    app.task(name=TASK_NAME)(hello)
