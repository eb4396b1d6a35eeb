"""The work-dir lock: one `widedeep run` at a time per work dir (cron starts them blindly).

Two implementations behind :func:`work_dir_lock`, each on the one primitive its storage
makes atomic:

- local disk: ``fcntl.flock`` on ``<work_dir>/.lock``, held for the whole run. The kernel
  releases it when the process dies, however it dies, so there is no stale lock to judge
  and no pid to trust (after a reboot pids are reused); the pid inside is only for the
  message a second run prints.
- ``gs://``: the object ``<work_dir>/.lock`` created with the precondition "generation 0"
  (create only if absent), which GCS applies atomically, and deleted with the precondition
  "still my generation". Nothing releases it if the process is killed, so a lock whose
  holder is a dead process *on this host* is taken over; a lock held from another host is
  reported with the command that removes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import socket
from typing import Iterator

from transforms import paths

LOG = logging.getLogger("widedeep")
LOCK_FILE = ".lock"


class LockedError(RuntimeError):
    """Another run holds the work dir."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[str]:
    """Holds the work dir's lock for the ``with`` block; yields the lock's path."""
    path = paths.join(work_dir, LOCK_FILE)
    if not paths.is_remote(work_dir):
        with _local_lock(work_dir, path):
            yield path
    elif str(work_dir).startswith("gs://"):
        with _gcs_lock(path):
            yield path
    else:
        raise LockedError(f"work dir {work_dir}: runs can lock a local or gs:// work dir "
                          f"only; use one of those")


def _holder_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def _describe(text: str) -> tuple[dict, str]:
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict):
            raise ValueError
    except ValueError:
        holder = {"pid": text.strip() or "?"}
    where = f" on {holder['host']}" if holder.get("host") else ""
    since = f" since {holder['since']}" if holder.get("since") else ""
    return holder, f"process {holder.get('pid', '?')}{where}{since}"


@contextlib.contextmanager
def _local_lock(work_dir: str, path: str) -> Iterator[None]:
    import fcntl

    paths.makedirs(work_dir)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise LockedError(f"work dir {work_dir} is locked by running "
                              f"{_describe(text)[1]} ({path}); not starting a second run"
                              ) from None
        # The holder before us may have unlinked the file between our open and our flock:
        # then we hold a lock on a file nobody else will see. Only the file at `path` counts.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        yield
    finally:
        # Unlinked while still held, so no one can lock this inode after we let go.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as e:
        return isinstance(e, OSError) and e.errno == errno.EPERM
    return True


@contextlib.contextmanager
def _gcs_lock(path: str) -> Iterator[None]:
    from google.api_core import exceptions
    from google.cloud import storage

    bucket_name, _, object_name = path[len("gs://"):].partition("/")
    client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "widedeep")
    blob = client.bucket(bucket_name).blob(object_name)
    while True:
        try:
            blob.upload_from_string(_holder_text(), content_type="application/json",
                                    if_generation_match=0)
            break
        except exceptions.PreconditionFailed:
            held = client.bucket(bucket_name).get_blob(object_name)
            if held is None:
                continue  # released between our attempt and the read: try again
            holder, who = _describe(held.download_as_bytes().decode("utf-8", "replace"))
            if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
                LOG.warning("lock: taking over %s, left by %s, which is no longer running",
                            path, who)
                with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
                    held.delete(if_generation_match=held.generation)
                continue
            raise LockedError(
                f"work dir {paths.dirname(path)} is locked by {who} ({path}); not starting a "
                f"second run. If that process is gone (a machine that died cannot release "
                f"a lock on GCS), delete the lock: gcloud storage rm {path}") from None
    generation = blob.generation
    try:
        yield
    finally:
        with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
            blob.delete(if_generation_match=generation)
