"""The Celery app: broker and result backend (Redis), queues, and the delivery guarantees ingestion needs.

Workers run the app in ``fanrag.ingest.celery.worker``::

    celery -A fanrag.ingest.celery.worker worker -Q fanrag.write --pool solo   # the one writer
    celery -A fanrag.ingest.celery.worker worker -Q fanrag --concurrency 4     # load/chunk + embed, any n

Configuration comes from the environment (a submitter may pass a CeleryConfig instead):

    FANRAG_CELERY_BROKER              broker URL (default redis://127.0.0.1:6379/0; or $CELERY_BROKER_URL)
    FANRAG_CELERY_BACKEND             result backend URL (default: the broker URL)
    FANRAG_CELERY_VISIBILITY_TIMEOUT  seconds before an unacknowledged task goes back to its queue (3600)
    FANRAG_CELERY_RESTORE_INTERVAL    seconds between sweeps for such tasks (10)
    FANRAG_CELERY_MAX_ATTEMPTS        deliveries of one task before its document is recorded as failed (5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, require

require("celery", feature="the Celery executor", extra="celery")
require("redis", feature="the Celery executor", extra="celery")

if TYPE_CHECKING:
    from celery import Celery  # type: ignore[import-untyped]

WORK_QUEUE = "fanrag"  # plan, load/chunk, embed: any number of worker processes
WRITE_QUEUE = "fanrag.write"  # write + finalise: ONE worker process (the stores allow one writer per home)

PLAN = "fanrag.ingest.plan"
LOAD_CHUNK = "fanrag.ingest.load_chunk"
EMBED = "fanrag.ingest.embed"
WRITE = "fanrag.ingest.write"
FINALISE = "fanrag.ingest.finalise"

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = DEFAULT_BROKER
    backend_url: str = ""  # empty: the broker
    visibility_timeout: float = 3600.0
    restore_interval: float = 10.0
    max_attempts: int = 5
    extra: dict[str, Any] = field(default_factory=dict)  # more Celery settings, applied last

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> CeleryConfig:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "broker_url": env.get("FANRAG_CELERY_BROKER") or env.get("CELERY_BROKER_URL") or DEFAULT_BROKER,
            "backend_url": env.get("FANRAG_CELERY_BACKEND", ""),
            "visibility_timeout": _number(env, "FANRAG_CELERY_VISIBILITY_TIMEOUT", 3600.0),
            "restore_interval": _number(env, "FANRAG_CELERY_RESTORE_INTERVAL", 10.0),
            "max_attempts": int(_number(env, "FANRAG_CELERY_MAX_ATTEMPTS", 5)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"cannot read {raw!r} as a number") from None
    if value <= 0:
        raise ConfigError(name, "must be > 0")
    return value


def create_app(config: CeleryConfig | None = None, *, include_tasks: bool = False) -> Celery:
    """A Celery app for ingestion. A submitter needs no tasks (it sends them by name); workers do."""
    from celery import Celery  # type: ignore[import-untyped]

    from . import codec

    codec.register()
    cfg = config or CeleryConfig.from_env()
    app = Celery("fanrag", broker=cfg.broker_url, backend=cfg.backend_url or cfg.broker_url,
                 include=["fanrag.ingest.celery.tasks"] if include_tasks else [], set_as_current=False)
    transport = {"visibility_timeout": cfg.visibility_timeout,
                 "unacked_restore_interval": max(1, int(cfg.restore_interval)), "unacked_restore_throttle": 1}
    app.conf.update(
        # Acknowledge after the task ran, and put it back if its worker process died: a killed worker's
        # document is redone (every step is idempotent; the write is delete + write + commit).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # Messages carry the pipeline's own dataclasses and float32 vectors: a JSON codec that builds only
        # those (codec.py), never pickle. Results (per-source records, the run summary) are plain JSON.
        task_serializer=codec.NAME,
        accept_content=[codec.NAME, "json"],
        result_serializer="json",
        result_accept_content=["json"],
        result_extended=False,
        task_routes={**{name: {"queue": WORK_QUEUE} for name in (PLAN, LOAD_CHUNK, EMBED)},
                     **{name: {"queue": WRITE_QUEUE} for name in (WRITE, FINALISE)}},
        task_default_queue=WORK_QUEUE,
        fanrag_max_attempts=cfg.max_attempts,
    )
    app.conf.update(cfg.extra)
    return app
