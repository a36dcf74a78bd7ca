"""The run's folder: created and checked writable before any work, and locked for the life of
the run so that a second run on it refuses at once.

The lock is ``<workdir>/train.lock``, held with ``fcntl.flock``: the kernel releases it when
the process ends, however it ends, so a lock file left by a killed run never blocks the next
one. The file records the holder's pid and start time for the message a second run prints.

The workdir also records the data a run was trained on (``data.json``: each file's name, size
and modification time); a resume on a data folder whose files were added, removed or resized
is refused, since the batches would differ.

Standard library only: `train.py` loads this file before importing JAX, so that a second run
refuses within a second instead of after the imports.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator

LOCK_NAME = "train.lock"


class WorkdirError(ValueError):
    """A workdir that cannot be used: not a writable folder, or in use by another run."""


def _open_lock(workdir: str) -> int:
    try:
        os.makedirs(workdir, exist_ok=True)
        return os.open(os.path.join(workdir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError:
        raise WorkdirError(f"workdir {workdir!r} exists and is not a folder") from None
    except OSError as e:
        raise WorkdirError(f"workdir {workdir!r} is not writable ({e.strerror})") from None


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip()


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Creates `workdir` if needed and holds its lock until the block exits.

    Re-entrant within a process: if this process already holds the lock (`train.py` takes it
    early), the block runs under that lock.

    Raises:
      WorkdirError: `workdir` is not a writable folder, or another process holds its lock.
    """
    fd = _open_lock(workdir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = _holder(fd)
            if holder.split(" ", 1)[0] == f"pid={os.getpid()}":
                yield  # held by this process already
                return
            raise WorkdirError(
                f"workdir {workdir!r} is in use by another run ({holder or 'unknown process'}); "
                "wait for it to finish, or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid={os.getpid()} started {started}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


DATA_RECORD = "data.json"


def data_fingerprint(paths: list[str], root: str) -> dict[str, list[int]]:
    """``{relative path: [size in bytes, mtime in ns]}`` of the data files of a run."""
    out = {}
    for p in paths:
        st = os.stat(p)
        out[os.path.relpath(p, root)] = [st.st_size, st.st_mtime_ns]
    return out


def _listing(what: str, names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{what} {', '.join(map(repr, names[:3]))}{more}"


def check_data(workdir: str, fingerprint: dict[str, list[int]], *, resuming: bool) -> list[str]:
    """Compares `fingerprint` with the one a run recorded in ``<workdir>/data.json``.

    Returns the files whose modification time alone changed (a copy or a ``touch``: worth a
    warning, not a refusal). Nothing is compared for a new run or a workdir without a record.

    Raises:
      WorkdirError: resuming, and files were added, removed or changed size: the batches
        would no longer be those of the checkpointed run.
    """
    path = os.path.join(workdir, DATA_RECORD)
    if not resuming or not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or not all(
            isinstance(v, list) and len(v) == 2 for v in saved.values()
        ):
            raise ValueError("expected {file: [size, mtime]}")
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise WorkdirError(
            f"{path}: unreadable record of the run's data ({e}); restore it, or use another "
            "--workdir"
        ) from None
    added = sorted(set(fingerprint) - set(saved))
    removed = sorted(set(saved) - set(fingerprint))
    resized = sorted(k for k in set(saved) & set(fingerprint) if saved[k][0] != fingerprint[k][0])
    changes = [
        _listing(what, names)
        for what, names in (("added", added), ("removed", removed), ("changed size", resized))
        if names
    ]
    if changes:
        raise WorkdirError(
            f"the data folder changed since workdir {workdir!r} was checkpointed "
            f"({'; '.join(changes)}): resuming would train on other batches; restore the "
            "data, or use another --workdir"
        )
    return sorted(k for k in saved if saved[k][1] != fingerprint[k][1])
