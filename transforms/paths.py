"""The path layer: every file operation on a path a user gives (input, work dir, model dir,
serving dir), local or on an object store (``gs://``).

Why one layer: a stage that calls ``os``/``shutil``/``glob`` on ``gs://b/work`` silently
works on a local directory named ``gs:`` instead. Here, remote paths go through
``tf.io.gfile`` (the filesystem TensorFlow itself reads checkpoints, SavedModels and
TFRecords with, so what one stage writes the next one reads the same way); Beam jobs read
their inputs through Beam's ``FileSystems`` (``pipeline.io``). Local paths keep the POSIX
calls they always had, for two guarantees an object store does not give:

- a directory rename is one atomic step locally; on GCS it is a copy and a delete, object
  by object. :func:`promote` therefore writes a *marker* last on every filesystem, and
  readers trust an output only once its marker is there;
- a local file is replaced atomically and durably (temp file, fsync, rename, fsync of the
  directory); an object on GCS appears whole or not at all when its upload ends, so it is
  simply written.

It sits in ``transforms`` because that is the package every other one builds on (the
synthetic log writer uses it too).
"""

from __future__ import annotations

import contextlib
import glob as _glob
import io
import json
import os
import posixpath
import shutil
import tempfile
from typing import Iterator


def is_remote(path: str) -> bool:
    """True for a URL such as ``gs://bucket/dir`` (any scheme TensorFlow knows)."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def join(path: str, *parts: str) -> str:
    path = str(path)
    if is_remote(path):
        return posixpath.join(path, *parts)
    return os.path.join(path, *parts)


def under(*parts: str, doc: str | None = None) -> property:
    """A layout class's property: ``parts`` joined onto the instance's ``root``."""
    return property(lambda layout: join(layout.root, *parts), doc=doc)


def absolute(path: str) -> str:
    """Workers may run in another directory or on another machine: no relative paths."""
    return str(path) if is_remote(path) else os.path.abspath(path)


def relative_to(path: str, root: str) -> str | None:
    """`path` relative to `root` ("runs/a/model"), or None when it is not under it."""
    path, root = absolute(path).rstrip("/"), absolute(root).rstrip("/")
    if not path.startswith(root + "/"):
        return None
    return path[len(root) + 1:]


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def dirname(path: str) -> str:
    return posixpath.dirname(str(path).rstrip("/"))


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Creates `path` and its parents; nothing to do on an object store, where a
    "directory" is only a common prefix (TF would write an empty ``dir/`` object)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names of the entries of a directory ([] if it does not exist), sorted."""
    if is_remote(path):
        gfile = _gfile()
        if not gfile.isdir(path):
            return []
        return sorted({name.rstrip("/") for name in gfile.listdir(path) if name.rstrip("/")})
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def glob(pattern: str) -> list[str]:
    """Paths matching a glob, sorted."""
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    return sorted(_glob.glob(pattern))


def remove(path: str) -> None:
    """Deletes a file; a missing one is not an error."""
    if is_remote(path):
        gfile = _gfile()
        if gfile.exists(path):
            gfile.remove(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def rmtree(path: str) -> None:
    """Deletes a directory and everything under it; a missing one is not an error."""
    if is_remote(path):
        gfile = _gfile()
        if gfile.isdir(path):
            gfile.rmtree(path)
        elif gfile.exists(path):
            gfile.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def read_bytes(path: str) -> bytes:
    with _gfile().GFile(path, "rb") if is_remote(path) else open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str, default=None):
    """The JSON value of `path`, or `default` when the file does not exist."""
    if not exists(path):
        return default
    return json.loads(read_text(path))


def read_json_lines(path: str) -> list:
    """One JSON value per non-blank line of `path`; [] when the file does not exist."""
    if not exists(path):
        return []
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def write_json_lines(path: str, values) -> str:
    return write_text(path, "".join(json.dumps(v, default=str) + "\n" for v in values))


def write_bytes(path: str, data: bytes) -> str:
    """Writes `path` so that no reader ever sees part of it, and it survives a crash.

    Locally: a temporary file beside it, fsync, rename over it, fsync of the directory
    (without the last two a power cut can leave an empty file under the final name). On an
    object store an upload becomes visible whole when it completes.
    """
    if is_remote(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; others (TF Serving) read these
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and not e.filename:  # ENOSPC from write() names no file
            raise OSError(e.errno, e.strerror, path) from None
        raise
    _fsync_dir(directory)
    return path


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value) -> str:
    return write_text(path, json.dumps(value, indent=2, default=str))


def write_npy(path: str, array) -> str:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_bytes(path, buffer.getvalue())


def read_npy(path: str):
    import numpy as np

    return np.load(io.BytesIO(read_bytes(path)))


def copy(src: str, dst: str) -> None:
    """Copies one file (either side local or remote; server-side within GCS)."""
    if not is_remote(src) and not is_remote(dst):
        shutil.copyfile(src, dst)
    else:
        _gfile().copy(src, dst, overwrite=True)


def files_under(root: str) -> list[str]:
    """Every file below `root`, as paths relative to it, sorted."""
    if not is_remote(root):
        return sorted(os.path.relpath(os.path.join(d, name), root)
                      for d, _, names in os.walk(root) for name in names)
    gfile = _gfile()
    found = []
    for directory, _, names in gfile.walk(root):
        relative = str(directory)[len(root.rstrip("/")):].strip("/")
        found += [posixpath.join(relative, name) if relative else name
                  for name in names if name and not name.endswith("/")]
    return sorted(found)


def copytree(src: str, dst: str, *, last: str | None = None) -> None:
    """Copies a directory file by file; `last` (a path relative to `src`) is copied after
    everything else, so a reader that waits for it never sees a partial copy."""
    if not is_remote(src) and not is_remote(dst) and last is None:
        shutil.copytree(src, dst)
        return
    names = files_under(src)
    if last is not None and last not in names:
        raise FileNotFoundError(f"{join(src, last)}: missing; it is the file copied last to "
                                f"show that {dst} is complete")
    ordered = [n for n in names if n != last] + ([last] if last is not None else [])
    for name in ordered:
        target = join(dst, name)
        makedirs(dirname(target))
        copy(join(src, name), target)


def promote(partial_dir: str, output_dir: str, *, marker: str) -> None:
    """Puts a complete job output in place of an older one.

    `marker` (a file of `partial_dir`, written last by the job) is what readers check
    (:func:`is_complete`). Locally the whole directory moves in one atomic rename. On an
    object store, where a rename is a copy and a delete per object, the old output's marker
    is deleted first, then the files are copied with the marker last, then the partial dir
    is deleted: at no moment is there a marker beside an incomplete output.
    """
    if not exists(join(partial_dir, marker)):
        raise FileNotFoundError(f"{join(partial_dir, marker)}: missing; {partial_dir} is not a "
                                f"complete output and is not promoted")
    remove(join(output_dir, marker))
    replace_dir(partial_dir, output_dir, last=marker)


def is_complete(output_dir: str, marker: str) -> bool:
    """True once :func:`promote` (or the job itself) wrote the output's marker."""
    return exists(join(output_dir, marker))


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file with `path`'s content, for libraries that only read local files."""
    if not is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="widedeep-") as scratch:
        local = os.path.join(scratch, basename(path))
        copy(path, local)
        yield local


def replace_dir(src: str, dst: str, *, last: str | None = None) -> None:
    """Moves a finished directory over `dst`: one rename locally; on an object store a copy
    (`last` copied after everything else) and a delete, so there the caller's marker must
    say when `dst` is complete."""
    rmtree(dst)
    if is_remote(src) or is_remote(dst):
        copytree(src, dst, last=last)
        rmtree(src)
    else:
        os.rename(src, dst)
