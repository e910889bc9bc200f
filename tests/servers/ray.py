"""A local Ray cluster for tests, one per test session (start-up costs seconds and ~700 MB).

    from tests.servers.ray import ray_cluster  # the session-scoped fixture; yields a RayCluster

It is ``ray.init()`` in the test process, not ``ray start --head``: the cluster belongs to this process, so
``ray.shutdown()`` stops exactly it, while ``ray stop`` stops every Ray on the machine (other test sessions'
too); and ``ray start`` records its address in /tmp/ray/ray_current_cluster, where any other process's plain
``ray.init()`` would find and join it. Executors in the tests find Ray initialised and use it; a subprocess
(e.g. the CLI) joins it through ``RayCluster.address``. 2 CPUs, no dashboard, a private temp dir, a small
object store, no usage stats.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

NUM_CPUS = 2
OBJECT_STORE_BYTES = 128 << 20


@dataclass(frozen=True)
class RayCluster:
    address: str  # the GCS address: ``ray.init(address=...)`` / ``pipeline.executor = "ray:<address>"``
    num_cpus: int
    startup_s: float


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'fanrag[ray]')")
    if ray.is_initialized():  # another module's copy of this fixture started it
        yield RayCluster(ray.get_runtime_context().gcs_address, NUM_CPUS, 0.0)
        return
    # Short path: Ray's unix sockets live under it, and socket paths are limited to 107 bytes.
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")  # also for subprocesses that join the cluster
        mp.delenv("RAY_ADDRESS", raising=False)
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=NUM_CPUS, include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, _temp_dir=tmp, namespace="fanrag-tests", log_to_driver=False)
        try:
            yield RayCluster(ray.get_runtime_context().gcs_address, NUM_CPUS, time.perf_counter() - t0)
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
