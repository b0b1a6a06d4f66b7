"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every file that training writes goes through `atomic_write`: the content is
written to a temporary file in the same folder (same file system, so the
final `os.replace` is an atomic rename on POSIX and Windows), flushed to
disk, then renamed over the target. A failure or a kill before the rename
leaves the old file intact and removes (or, for a kill, leaves behind) only
the temporary file, whose name starts with `.` and ends with `.partial`.
"""

import contextlib
import os
import pathlib
import shutil
import uuid

PARTIAL_SUFFIX = ".partial"


def temporary_path(path):
    """A fresh temporary name beside `path` that keeps its suffixes (`.x.weights.h5.<id>.partial` would not:
    Keras and NumPy check the suffix), so it is `.NAME-<id>.partial<suffixes>`."""
    path = pathlib.Path(path)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    return path.with_name(f".{stem}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}{suffixes}")


def _fsync(path):
    try:
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
    except OSError:  # pragma: no cover - file systems without fsync
        pass


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write in full; renamed over `path` when the block ends without an error.

    For writers that want a file name (Keras `save_weights`, `np.savez`):

    >>> with atomic_path("best.weights.h5") as temporary:  # doctest: +SKIP
    ...     model.save_weights(str(temporary))
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"Nothing was written to {temporary} for {path}.")
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding=None, newline=None):
    """Opens a temporary file for writing; it replaces `path` only if the block ends without an error.

    Args:
        path: the file to (re)write.
        mode: `"w"` (text) or `"wb"` (bytes).
        encoding, newline: as for `open` (text mode; encoding defaults to UTF-8).

    Example:
    >>> with atomic_write("grid.json") as handle:  # doctest: +SKIP
    ...     json.dump(results, handle)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}.")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as temporary:
        with open(temporary, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return pathlib.Path(path)


def atomic_copy(source, target):
    """Copies `source` to `target` atomically (the copy lands under a temporary name, then is renamed)."""
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)
    return pathlib.Path(target)


@contextlib.contextmanager
def atomic_folder(path, replaceable=None):
    """Yields an empty staging folder beside `path`; when the block ends without an error it becomes `path`, whole.

    For the outputs of one run that belong together (a prediction's JSON,
    arrays and pictures; a web export): they are written into the staging
    folder, then the previous `path` (if any) is moved aside and the staging
    folder renamed into its place, so a reader finds the previous run's
    files or the new run's, never a mixture (between the two renames, for a
    moment, no folder). A failure or an exception removes the staging folder
    and leaves `path` as it was.

    Args:
        path: the folder to publish.
        replaceable: callable `folder -> bool` saying whether an existing,
            non-empty `path` may be replaced (e.g. it is a previous run's);
            None replaces only an empty one.

    Raises:
        FileExistsError: `path` is a file, or a non-empty folder `replaceable` refuses.

    Example:
    >>> with atomic_folder("served") as folder:  # doctest: +SKIP
    ...     (folder / "predictions.json").write_text(report)
    """
    path = pathlib.Path(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} is a file; give a folder.")
        if any(path.iterdir()) and not (replaceable is not None and replaceable(path)):
            raise FileExistsError(f"{path} holds other files; give an empty or new folder (nothing in it was changed).")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(path)
    staging.mkdir()
    try:
        yield staging
        previous = None
        if path.exists():
            previous = temporary_path(path)
            os.replace(path, previous)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
