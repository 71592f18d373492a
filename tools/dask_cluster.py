"""Dask distributed clients for fan-out work (relaxations): a LocalCluster by default, or an existing cluster.

The local default is one single-threaded worker process per core: CHGNet relaxations are small serial
PyTorch workloads, so process parallelism beats threads, and each worker pins torch to one thread
(see :func:`tools.relax.relax_many`). ``address`` joins a running cluster (``dask scheduler`` on a
workstation, dask-jobqueue on SLURM/PBS) instead.

Memory is bounded per worker: each local worker has a memory limit, and its nanny kills and restarts the
worker process when it passes ``TERMINATE_FRACTION`` of it. The task it was running is lost (``KilledWorker``
once ``allowed_failures`` retries are used up), which :func:`tools.relax.relax_many` records as that
structure's failure; the batch goes on with the restarted worker.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import dask
from distributed import Client, LocalCluster

from tessera.tools.errors import ToolFailed

# Environment for spawned worker processes: one BLAS/OpenMP thread each (they share the cores), and
# nothing may reach out to a model hub at run time.
WORKER_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
}


WORKER_MEMORY_LIMIT: str = "auto"
"""Memory per local worker: "auto" is the machine's memory divided among the workers (about 11 GB each for two
workers on 23 GB). A CHGNet relaxation of the largest structure the readers admit (``tools.io.MAX_ATOMS``)
needs ~2 GB; a pathological one that grows past the limit costs its own worker, not the machine."""
TERMINATE_FRACTION: float = 0.95
"""The nanny kills (and restarts) a worker above this fraction of its memory limit (Dask's default)."""


def default_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def total_threads(client: Client) -> int:
    """Worker threads currently in the cluster (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


@contextmanager
def dask_client(
    *,
    workers: int | None = None,
    address: str | None = None,
    allowed_failures: int = 1,
    timeout_s: float = 60.0,
    memory_limit: str | int | None = None,
) -> Iterator[Client]:
    """A Dask client, closed (and its LocalCluster shut down) on exit.

    Args:
        workers: local worker processes (default: one per core). Ignored when ``address`` is given.
        address: scheduler address of an existing cluster, e.g. ``tcp://10.0.0.5:8786``.
        allowed_failures: times a task may be lost with a dying worker before Dask gives up on it
            (``KilledWorker``); low, so a structure that crashes its worker fails fast instead of
            killing worker after worker.
        timeout_s: how long to wait for the scheduler / the first worker.
        memory_limit: per local worker, bytes or a string like "2GB" (default ``WORKER_MEMORY_LIMIT``).
            Ignored when ``address`` is given: an existing cluster keeps its own limits.
    """
    if address is not None:
        try:
            client = Client(address, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ToolFailed(f"cannot reach Dask scheduler at {address}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return

    n = workers if workers is not None else default_workers()
    if n < 1:
        raise ToolFailed(f"need at least one Dask worker, got {n}")
    config = {
        "distributed.scheduler.allowed-failures": allowed_failures,
        "distributed.nanny.pre-spawn-environ": WORKER_ENV,
        # Keep at most one queued task per worker thread so a dying worker takes only its own task.
        "distributed.scheduler.worker-saturation": 1.0,
        # Relaxations hold no Dask data worth spilling, and a paused worker would stall the batch: the one
        # memory rule is the nanny's kill-and-restart.
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": TERMINATE_FRACTION,
    }
    with dask.config.set(config):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit if memory_limit is not None else WORKER_MEMORY_LIMIT,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
        try:
            client = Client(cluster, timeout=f"{timeout_s}s")
            try:
                client.wait_for_workers(n_workers=1, timeout=timeout_s)
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
