"""``open_transport(url)``: the job transport a URL names, its module imported only when asked for."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigError
from ..registry import Registry
from .base import QUEUE_FIELD, JobTransport

# URL scheme -> transport class; each class is built by ``from_url(url)``.
TRANSPORTS: Registry[type] = Registry(QUEUE_FIELD, "job transport")
for _scheme in ("redis", "rediss", "unix"):
    TRANSPORTS.add(_scheme, "fanrag.jobs.redis_streams:RedisStreamsTransport", extra="redis")
TRANSPORTS.add("kafka", "fanrag.jobs.kafka:KafkaTransport", extra="kafka")
for _scheme in ("bullmq", "bullmqs"):
    TRANSPORTS.add(_scheme, "fanrag.jobs.bullmq:BullMQTransport", extra="bullmq")


def open_transport(url: str) -> JobTransport:
    """A transport from its URL: ``redis://host:port/db?stream=NAME&group=NAME&max_attempts=5``."""
    scheme = urlsplit(url).scheme
    if scheme not in TRANSPORTS:
        raise ConfigError(QUEUE_FIELD, f"unknown scheme {scheme!r} in {url!r}; "
                          "available: redis://, rediss://, kafka://, bullmq://")
    return TRANSPORTS.load(scheme).from_url(url)  # type: ignore[attr-defined]
