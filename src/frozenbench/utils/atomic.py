"""Write artifacts to a temporary sibling path and rename them into place.

A writer that is interrupted (exception, SIGKILL) leaves at most a hidden
``.<name>.tmp-*`` sibling, never a half-written artifact under the real name.

Temporary trees are removed by :func:`remove_tree`, not ``shutil.rmtree``: on Python 3.11
``rmtree`` recurses once per folder level, so a tree about a thousand folders deep (what a hostile
archive extracts) raises ``RecursionError``, which ``ignore_errors`` does not catch; the tree would
stay, and every later sweep of it would crash the same way.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARKER = ".tmp-"


def remove_temporaries(path: str | Path, name: str | None = None) -> None:
    """Delete the temporary siblings that killed writers of ``path`` left behind (a SIGKILL or a
    crashed process skips every cleanup); with ``name`` = ``"*"``, those of every file in the
    folder ``path``. Only call it where no such writer is running."""
    path = Path(path)
    folder, pattern = (path, name) if name is not None else (path.parent, glob.escape(path.name))
    for leftover in folder.glob(f".{pattern}{TMP_MARKER}*"):
        remove_tree(leftover, ignore_errors=True)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, dir_fd: int) -> int:
    """Open the folder ``name`` in ``dir_fd``, never through a link (ELOOP / ENOTDIR instead); a
    folder without read or search permission for its owner (an archive's mode 0 folder) is opened
    after giving them back, which needs ownership, not permission."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        if not hasattr(os, "O_PATH"):
            raise
    # a descriptor that only names the folder (O_PATH opens it without any permission) lets chmod
    # act on that very folder: a chmod by name would follow a link swapped in meanwhile
    handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{handle}", 0o700)
    finally:
        os.close(handle)
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _clear_files(fd: int) -> list[str]:
    """Unlink everything but the folders in the folder ``fd``; returns the folders' names."""
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o300 != 0o300:
        os.fchmod(fd, 0o700)  # unlinking needs write and search permission on the folder
    folders = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
            else:  # files, links (never followed), fifos, sockets, devices
                _unlink(entry.name, fd)
    return folders


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # removed meanwhile: what was wanted


def _remove_folder(parent_fd: int, name: str) -> None:
    """Remove the folder ``name`` in ``parent_fd`` and everything under it, depth first with an
    explicit stack. Only one folder is open at a time (a deep tree must not run out of descriptors);
    going back up opens ``..`` and checks it is the folder come down from, so a folder moved
    meanwhile stops the removal instead of redirecting it elsewhere."""
    fd = _open_dir(name, parent_fd)
    # per level: (name in its parent, the parent's identity, its subfolders not yet removed)
    stack: list[tuple[str, tuple[int, int], list[str] | None]] = [(name, _identity(parent_fd), None)]
    try:
        while stack:
            here, above, pending = stack[-1]
            if pending is None:
                pending = _clear_files(fd)
                stack[-1] = (here, above, pending)
            if pending:
                child_name = pending.pop()
                try:
                    child = _open_dir(child_name, fd)
                except FileNotFoundError:
                    continue  # removed meanwhile
                except OSError as err:
                    if not isinstance(err, NotADirectoryError) and err.errno != errno.ELOOP:
                        raise
                    _unlink(child_name, fd)  # replaced by a file or a link meanwhile
                    continue
                stack.append((child_name, _identity(fd), None))
                os.close(fd)
                fd = child
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if _identity(fd) != above:
                raise OSError(errno.ESTALE, f"{here!r} was moved during its removal; stopping")
            os.rmdir(here, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_tree(path: str | Path, ignore_errors: bool = False) -> None:
    """Remove ``path``: a folder with everything under it, or a file; a link is removed itself,
    never followed. Iterative, so any depth works (``shutil.rmtree`` on 3.11 recurses), and names
    that are not valid UTF-8 are removed like any other. A missing ``path`` is no error."""
    path = Path(path)
    try:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):
            path.unlink(missing_ok=True)
            return
        parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _remove_folder(parent_fd, path.name)
        finally:
            os.close(parent_fd)
    except FileNotFoundError:
        pass  # removed meanwhile (e.g. by another sweep)
    except OSError:
        if not ignore_errors:
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    """A hidden sibling; mkstemp/mkdtemp create 0600/0700, so widen to what a plain create would
    give (artifacts are shared on clusters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARKER}", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARKER}", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=True)
    try:
        yield tmp
    except BaseException:
        remove_tree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if not overwrite:
            remove_tree(tmp, ignore_errors=True)
            raise FileExistsError(f"{path}: already exists")
        # Move the old folder aside first so a crash between the two renames loses nothing.
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        old.rmdir()
        path.rename(old)
        tmp.rename(path)
        remove_tree(old, ignore_errors=True)
    else:
        tmp.rename(path)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=False)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Deterministic JSON (sorted keys) written atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
