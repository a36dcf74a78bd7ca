"""Multi-host runs: starting `jax.distributed`, and the few decisions every process must share.

One process per host (TPU VM worker, SLURM task, or a process per GPU group) runs the same
command. `initialize` connects them: from explicit flags, or, with none given, from what
`jax.distributed.initialize()` detects (TPU VM metadata, SLURM or Open MPI variables). On the
CPU backend collectives use gloo, so several processes on one machine (or several machines)
form one mesh, which is how the tests check multi-host behaviour without accelerators.
"""

from __future__ import annotations

import hashlib
import inspect

import jax
import numpy as np

# How long the coordination service waits for a silent process before it stops the others.
DEFAULT_HEARTBEAT_TIMEOUT_S = 30


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
) -> None:
    """Calls `jax.distributed.initialize` once (later calls do nothing).

    Args:
      coordinator_address: ``host:port`` of process 0; ``None`` lets JAX detect the cluster.
      num_processes: how many processes take part; ``None`` to detect.
      process_id: this process's rank in ``[0, num_processes)``; ``None`` to detect.
      heartbeat_timeout_s: a process silent this long (killed, crashed) stops the others
        instead of leaving them blocked in a collective (on jax versions that take it).

    Raises:
      ValueError: an inconsistent combination of the arguments.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError(
            "multi-host flags: give all of --coordinator-address, --num-processes and "
            f"--process-id, or none (to detect them); got {explicit}"
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id: got {process_id}, expected 0 <= id < --num-processes={num_processes}"
        )
    if _is_initialized():
        return
    # Must be set before the CPU backend starts; ignored by GPU and TPU backends.
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # a jax without CPU collectives: CPU multi-process cannot run
        pass
    kwargs = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
        kwargs["heartbeat_timeout_seconds"] = heartbeat_timeout_s
    jax.distributed.initialize(**kwargs)


def _is_initialized() -> bool:
    is_initialized = getattr(jax.distributed, "is_initialized", None)  # newer jax
    if is_initialized is not None:
        return is_initialized()
    from jax._src import distributed  # older jax: the same test, on its private state

    return distributed.global_state.client is not None


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any (a no-op with one process).

    Used so that a signal received by one process stops all of them at the same step: a
    process that stopped alone would leave the others waiting in the next collective.
    """
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
    return bool(np.any(flags))


def preemption_reached(step: int) -> bool:
    """True on every process at the same step once any process got SIGTERM (the usual
    preemption notice), through JAX's preemption sync; call it at every step."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # no preemption sync manager (e.g. jax.distributed not started)
        return False


def same_on_all_processes(text: str) -> bool:
    """Whether every process passed the same `text` (compared by a 31-bit hash of it)."""
    if jax.process_count() == 1:
        return True
    from jax.experimental import multihost_utils

    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") >> 1
    values = multihost_utils.process_allgather(np.asarray(digest, np.int32))
    return bool(np.all(values == digest))


def process_share(batch_size: int) -> tuple[int, int]:
    """(first index, count) of this process's slice of a global batch of `batch_size`."""
    count, rest = divmod(batch_size, jax.process_count())
    if rest:
        raise ValueError(
            f"config.batch_size: got {batch_size}, expected a multiple of the "
            f"{jax.process_count()} processes"
        )
    return jax.process_index() * count, count
