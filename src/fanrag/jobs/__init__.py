"""Scale-out ingestion: document jobs on a broker, consumed by a pool of workers.

``open_transport(url)`` gives a JobTransport (``redis://`` → Redis Streams, ``kafka://`` → Kafka,
``bullmq://`` → a BullMQ queue shared with Node.js); ``run_worker`` runs the
ingestion pipeline over its job stream. Jobs are acknowledged only after every store committed them.
Every broker's stream is one ``stream.BrokerJobStream`` (the logic) over that broker's I/O.
"""

from __future__ import annotations

from .base import Job, JobStream, JobTransport, PartitionedTransport, QueueStats, jobs_for
from .factory import open_transport

__all__ = ["Job", "JobStream", "JobTransport", "PartitionedTransport", "QueueStats", "jobs_for", "open_transport"]
