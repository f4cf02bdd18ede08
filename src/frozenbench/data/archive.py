"""Extract zip and tar archives by hand, one member at a time: regular files and folders only.

Why not ``zipfile.extractall`` or ``tarfile.extractall(filter="data")``? The ``data`` filter of the
Python this project runs on (3.11.7) checks each member against ``os.path.realpath`` of what is
already on disk, and ``realpath`` stops resolving symlinks once a path grows past ``PATH_MAX``: a
chain of nested symlinks to long folder names, then a link that climbs out, passes the filter and
lets later members (files, hard links) land anywhere the process may write (CVE-2025-4517, with
the related CVE-2025-4330, CVE-2025-4138 and CVE-2024-12718; fixed only in 3.11.13 / 3.12.11 /
3.13.4). ``tests/test_archives.py`` shows the bypass on such a Python. ``zipfile`` has no
filter at all. So nothing here relies on either: links of any kind are never created, and no path
is ever followed through one.

The rules, each refusal a :class:`~frozenbench.errors.UserError` naming the archive, the member and
the problem, with nothing left at the destination:

- only regular files and folders: tar symlinks, hard links, devices and fifos, zip entries whose
  mode (``external_attr``) says anything but a file or folder, and encrypted zip entries are refused;
- names are relative paths inside the target: no absolute path, drive letter, backslash, NUL or
  ``..`` component; a name given twice, or a file under a path the archive has as a file, is refused;
- names are UTF-8 text a terminal, a log line and a file list can show: a name that is not valid
  UTF-8 is refused with its bytes shown (a tar's raw bytes; a zip's without the UTF-8 flag, which
  ``zipfile`` reads as cp437, are taken as UTF-8 when they are valid UTF-8), and so is one with a
  control character (newline, escape sequences, bidirectional overrides); two names that differ
  only in case or Unicode normalisation are refused (macOS and Windows file systems would merge
  them); at most ``MAX_DEPTH`` folders deep, ``MAX_NAME_BYTES`` per name and ``NAME_MAX`` per
  component, so what lands can be walked, digested and removed like any other tree;
- files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0644, folders 0755, both less the
  umask; the archive's modes, owners and times are ignored) under folder descriptors opened with
  ``O_NOFOLLOW`` one component at a time, and each path must resolve to itself under the target;
- limits: the member count (default ``DEFAULT_MAX_MEMBERS``, 2 million: COCO's train2017 holds
  118k files, a Kinetics-400 split about 240k clips; ``$FROZENBENCH_ARCHIVE_MAX_MEMBERS`` raises
  it), and the bytes actually written (declared sizes are checked first, but not trusted; a zip
  member must hold exactly the size it declares): by default ``max(256 MiB, 100 x the archive's
  size)``, a decompression-bomb ratio that real image, video and annotation archives stay far
  below. A tar's extended (pax, GNU long-name) headers are bounded too: ``tarfile`` reads each
  whole into memory, and follows a chain of them by recursion.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from frozenbench.errors import UserError
from frozenbench.utils.atomic import atomic_dir

CHUNK = 1 << 20
DEFAULT_MAX_MEMBERS = 2_000_000
MAX_MEMBERS_ENV = "FROZENBENCH_ARCHIVE_MAX_MEMBERS"
MAX_DEPTH = 64  # folder levels of a member's path (real datasets use fewer than ten)
MAX_NAME_BYTES = 4096  # a member's whole name, in UTF-8 bytes (Linux's PATH_MAX)
NAME_MAX = 255  # one component of it, in bytes (the limit of ext4, xfs, btrfs, NTFS and APFS)
MAX_HEADER_BYTES = 1 << 20  # one pax or GNU long-name header (a long name or a few xattrs need KBs)
MAX_HEADER_CHAIN = 8  # extended headers before one member (pax global + pax + GNU long name/link)
MIN_MAX_BYTES = 256 << 20  # the floor of the default size limit
MAX_RATIO = 100  # default size limit: this many times the archive's own size (above the floor)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DRIVE = re.compile(r"^[A-Za-z]:")
# C0 and C1 controls, DEL, bidirectional marks and overrides (U+202E shows "gpj.exe" as "exe.jpg"),
# line and paragraph separators: each breaks a file list, a log line or what a terminal shows
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
NOT_UTF8 = "has a name that is not valid UTF-8 (its bytes are shown); only UTF-8 names are extracted"
_TAR_TYPES = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}
_ZIP_TYPES = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
}
# what reading a corrupt archive or writing to a full disk raises
_IO_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


def default_max_bytes(archive_size: int) -> int:
    return max(MIN_MAX_BYTES, MAX_RATIO * archive_size)


def default_max_members() -> int:
    """``$FROZENBENCH_ARCHIVE_MAX_MEMBERS`` when set (a dataset with more files than the default),
    else ``DEFAULT_MAX_MEMBERS``."""
    value = os.environ.get(MAX_MEMBERS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_MEMBERS
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{MAX_MEMBERS_ENV}={value!r}: expected a positive whole number of archive members")
    return int(value)


def _refusal(archive: Path, name: str | bytes, problem: str) -> UserError:
    return UserError(f"{archive}: member {name!r} {problem}")


def _folded(path: str) -> str:
    """What a case-insensitive, normalising file system (APFS, NTFS) sees of ``path``."""
    return path.lower() if path.isascii() else unicodedata.normalize("NFC", path).casefold()


def relative_name(archive: Path, name: str) -> str:
    """``name`` as a normalised relative path (``""`` for the archive's root); refuses a name that
    could land outside the target folder, one that is not UTF-8 text without control characters,
    and one too deep or too long to be walked and removed like any other tree."""
    try:
        encoded = name.encode()
    except UnicodeEncodeError:  # lone surrogates: the bytes a tar name had that are not UTF-8
        raise _refusal(archive, name.encode("utf-8", "surrogateescape"), NOT_UTF8) from None
    control = _CONTROL.search(name)
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif control is not None:
        raise _refusal(
            archive,
            name,
            f"contains the control character U+{ord(control.group()):04X}; names with control characters "
            f"are refused (they break file lists, logs and terminals)",
        )
    elif "\\" in name:
        problem = "contains a backslash (a Windows path separator)"
    elif name.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE.match(name):
        problem = "starts with a drive letter"
    else:
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." not in parts:
            if len(encoded) > MAX_NAME_BYTES:
                problem = f"is a name of {len(encoded)} bytes (limit: {MAX_NAME_BYTES})"
            elif len(parts) > MAX_DEPTH:
                problem = f"is {len(parts)} levels deep (limit: {MAX_DEPTH})"
            elif any(len(part.encode()) > NAME_MAX for part in parts):
                longest = max(len(part.encode()) for part in parts)
                problem = f"has a component of {longest} bytes (limit: {NAME_MAX}, the file systems' NAME_MAX)"
            else:
                return "/".join(parts)
            raise _refusal(archive, name, f"{problem}; refusing a path too deep or too long to handle safely")
        problem = "has a '..' component"
    raise _refusal(archive, name, f"{problem}; only paths inside the target folder are extracted")


class _Extraction:
    """The bookkeeping and the writes of one extraction into the fresh folder ``root``."""

    def __init__(
        self, archive: Path, root: Path, max_members: int, members_text: str, max_bytes: int, limit_text: str
    ) -> None:
        self.archive, self.max_members, self.members_text = archive, max_members, members_text
        self.max_bytes, self.limit_text = max_bytes, limit_text
        self.root = os.path.realpath(root)
        try:
            self.path_max = os.pathconf(self.root, "PC_PATH_MAX")
        except (OSError, ValueError):
            self.path_max = 4096
        self.root_fd = os.open(self.root, _DIR_FLAGS)
        # folded relative path -> (the path as named, "file" | "dir", named by a member itself rather
        # than implied as the folder of one): the explicit and the implied folders, and the files
        self.paths: dict[str, tuple[str, str, bool]] = {}
        self.members = 0
        self.declared = 0
        self.written = 0
        self.current: str | None = None  # the member being handled, for error messages
        self._cached: tuple[str, int] | None = None  # the last parent folder opened, and its descriptor

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None
        os.close(self.root_fd)

    def refuse(self, name: str, problem: str) -> UserError:
        return _refusal(self.archive, name, problem)

    def too_many(self, count: int) -> str:
        return (
            f"is number {count}: more than {self.max_members} members (limit: {self.members_text}): "
            f"refusing a possible archive bomb"
        )

    def _bomb(self, name: str) -> UserError:
        return self.refuse(
            name,
            f"takes the archive to more than {self.max_bytes} bytes uncompressed "
            f"(limit: {self.limit_text}): refusing a possible decompression bomb",
        )

    def check(self, name: str, kind: str, declared: int) -> str:
        """Validate a member before anything of it is written; returns its relative path."""
        self.current = name
        self.members += 1
        if self.members > self.max_members:
            raise self.refuse(name, self.too_many(self.members))
        rel = relative_name(self.archive, name)
        if kind == "file" and (not rel or name.endswith("/")):
            raise self.refuse(name, "is a file without a file name")
        if rel:
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                self._claim(name, "/".join(parts[:depth]), "dir", explicit=False)
            self._claim(name, rel, kind, explicit=True)
        self.declared += max(declared, 0)
        if self.declared > self.max_bytes:
            raise self._bomb(name)
        return rel

    def _claim(self, name: str, path: str, kind: str, explicit: bool) -> None:
        """Record that member ``name`` makes ``path`` a ``kind``; refuses a second claim that
        conflicts, or one on a name that differs from an earlier one only in case or normalisation."""
        key = _folded(path)
        seen = self.paths.get(key)
        if seen is None:
            self.paths[key] = (path, kind, explicit)
            return
        other, other_kind, other_explicit = seen
        if other != path:
            raise self.refuse(
                name,
                f"collides with {other!r}, earlier in the archive: the names differ only in case or Unicode "
                f"normalisation, which case-insensitive file systems (macOS, Windows) would merge",
            )
        if explicit and other_explicit:
            raise self.refuse(name, "occurs twice in the archive")
        if kind == "dir" and other_kind == "file":
            raise self.refuse(name, f"is inside {path!r}, which the archive has as a file")
        if kind == "file" and other_kind == "dir":
            raise self.refuse(name, "is a file, but the archive also has folders inside it")
        if explicit:
            self.paths[key] = (path, kind, True)

    def _dir_fd(self, rel: str) -> int:
        """A descriptor of the folder ``rel`` under the root, creating what is missing; every component
        is opened with O_NOFOLLOW, so no link is ever followed."""
        if not rel:
            return self.root_fd
        if self._cached is not None:
            if self._cached[0] == rel:
                return self._cached[1]
            os.close(self._cached[1])
            self._cached = None
        fd = self.root_fd
        try:
            for component in rel.split("/"):
                try:
                    os.mkdir(component, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(component, _DIR_FLAGS, dir_fd=fd)  # ELOOP on a link, ENOTDIR on a file
                if fd != self.root_fd:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self.root_fd:
                os.close(fd)
            raise
        self._cached = (rel, fd)
        return fd

    def _check_resolved(self, name: str, rel: str) -> None:
        full = os.path.join(self.root, rel)
        if len(os.fsencode(full)) >= self.path_max:
            raise self.refuse(name, f"makes a path longer than PATH_MAX ({self.path_max} bytes)")
        resolved = os.path.realpath(full)
        if os.path.commonpath([self.root, resolved]) != self.root:
            raise self.refuse(name, f"resolves to {resolved}, outside the target folder")
        if resolved != full:
            raise self.refuse(name, f"resolves to {resolved} through a link")

    def make_dir(self, name: str, rel: str) -> None:
        if rel:
            self._dir_fd(rel)
            self._check_resolved(name, rel)

    def write_file(self, name: str, rel: str, source: BinaryIO) -> int:
        """Write the member ``name`` from ``source``; returns the bytes it held."""
        parent, _, filename = rel.rpartition("/")
        parent_fd = self._dir_fd(parent)
        self._check_resolved(name, rel)
        fd = os.open(filename, _FILE_FLAGS, 0o644, dir_fd=parent_fd)
        size = 0
        with open(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                self.written += len(chunk)  # what the archive really holds, not what it declares
                if self.written > self.max_bytes:
                    raise self._bomb(name)
                out.write(chunk)
        return size


def _zip_name(archive: Path, info: zipfile.ZipInfo) -> str:
    """The member's name as its creator wrote it. ``orig_filename``: ``filename`` stops at a NUL
    byte, which would hide the rest of the name from every check. Without the UTF-8 flag
    ``zipfile`` decodes the bytes as cp437 (any byte decodes, into mojibake): they are taken as
    UTF-8 when they are valid UTF-8 (what Info-ZIP and most tools on Linux and macOS write), and
    refused otherwise (a Windows code page, or crafted)."""
    if info.flag_bits & 0x800:
        return info.orig_filename  # zipfile decoded it as strict UTF-8 already
    raw = info.orig_filename.encode("cp437")  # cp437 maps all 256 bytes: this is the name's bytes
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refusal(archive, raw, NOT_UTF8) from None


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except UnicodeDecodeError as err:  # a name flagged as UTF-8 that is not
        raise _refusal(archive, err.object, NOT_UTF8 + " (though the archive flags it as UTF-8)") from None


def _extract_zip(archive: Path, job: _Extraction) -> None:
    with _open_zip(archive) as zf:
        infos = zf.infolist()
        if len(infos) > job.max_members:  # before reading any of them
            raise job.refuse(infos[job.max_members].filename, job.too_many(len(infos)))
        plan = []
        for info in infos:  # every member is checked before anything is written
            name = _zip_name(archive, info)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no unix mode recorded (a DOS zip)
                what = _ZIP_TYPES.get(kind, f"of file type {oct(kind)}")
                raise job.refuse(name, f"is {what}; only regular files and folders are extracted")
            if info.flag_bits & 0x1:
                raise job.refuse(name, "is encrypted")
            is_dir = name.endswith("/") or kind == stat.S_IFDIR
            if is_dir and info.file_size:
                raise job.refuse(name, f"is a folder holding {info.file_size} bytes of data")
            plan.append((info, name, job.check(name, "dir" if is_dir else "file", info.file_size), is_dir))
        for info, name, rel, is_dir in plan:
            job.current = name
            if is_dir:
                job.make_dir(name, rel)
                continue
            with zf.open(info) as source:  # checks the CRC at the end
                size = job.write_file(name, rel, source)
            # zipfile stops at the declared size, but a member that holds less (its CRC-32 made to
            # match) ends early without an error: the central directory lies about it
            if size != info.file_size:
                raise job.refuse(
                    name, f"holds {size} bytes but declares {info.file_size}: a corrupt or crafted archive"
                )


class _HeaderRefused(Exception):
    """Raised inside ``tarfile``'s header parsing, which passes unknown exceptions on unchanged."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that refuses an extended header before ``tarfile`` reads it: a pax or GNU
    long-name header is read whole into memory (a few compressed MB can declare gigabytes), and a
    chain of them is followed by recursion (``_proc_member`` -> ``_proc_pax`` -> ``fromtarfile``),
    which a thousand headers in a row would take past the recursion limit."""

    _EXTENDED = (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type not in self._EXTENDED:
            return super()._proc_member(tarfile_)
        if self.size > MAX_HEADER_BYTES:
            raise _HeaderRefused(f"an extended header of {self.size} bytes (limit: {MAX_HEADER_BYTES})")
        depth = getattr(tarfile_, "_frozenbench_chain", 0) + 1
        if depth > MAX_HEADER_CHAIN:
            raise _HeaderRefused(f"more than {MAX_HEADER_CHAIN} extended headers in a row")
        tarfile_._frozenbench_chain = depth  # type: ignore[attr-defined]
        try:
            return super()._proc_member(tarfile_)
        finally:
            tarfile_._frozenbench_chain = depth - 1  # type: ignore[attr-defined]


def _extract_tar(archive: Path, job: _Extraction) -> None:
    try:
        # names are bytes in a tar: undecodable ones come through as lone surrogates, refused by name
        tf = tarfile.open(archive, "r:*", encoding="utf-8", errors="surrogateescape", tarinfo=_BoundedTarInfo)
    except tarfile.ReadError:
        raise UserError(f"{archive}: not a zip or tar archive") from None
    with tf:
        while (member := tf.next()) is not None:  # streamed: each member is checked before it is written
            tf.members.clear()  # tarfile keeps every header read: memory would grow with the member count
            name = member.name
            job.current = name
            if member.isdir():
                job.make_dir(name, job.check(name, "dir", 0))
            elif member.isreg():
                rel = job.check(name, "file", member.size)
                source = tf.extractfile(member)
                assert source is not None
                with source:
                    job.write_file(name, rel, source)
            else:
                what = _TAR_TYPES.get(member.type, f"of tar type {member.type!r}")
                if member.issym() or member.islnk():
                    what += f" (to {member.linkname!r})"
                raise job.refuse(name, f"is {what}; only regular files and folders are extracted")


def extract(archive: Path, dest: Path, *, max_members: int | None = None, max_bytes: int | None = None) -> None:
    """Unpack the zip or tar archive ``archive`` into ``dest`` (created atomically; it must not exist):
    regular files and folders only, at most ``max_members`` members (default: ``default_max_members()``)
    and ``max_bytes`` bytes (default: ``max(256 MiB, 100 x the archive's size)``). Anything else raises
    :class:`UserError` and leaves nothing at ``dest``."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UserError(f"{archive}: missing or not a file")
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest}: already exists")
    if max_members is None:
        max_members = default_max_members()
        members_text = f"{max_members}, ${MAX_MEMBERS_ENV} raises it"
    else:
        members_text = "max_members"
    size = archive.stat().st_size
    if max_bytes is None:
        max_bytes = default_max_bytes(size)
        limit_text = f"max({MIN_MAX_BYTES >> 20} MiB, {MAX_RATIO} x the archive's {size} bytes)"
    else:
        limit_text = "max_bytes"
    with atomic_dir(dest, overwrite=False) as tmp:
        # not tarfile.is_tarfile: it reads the first header with a plain TarInfo, unbounded
        unpack = _extract_zip if zipfile.is_zipfile(archive) else _extract_tar
        job = _Extraction(archive, tmp, max_members, members_text, max_bytes, limit_text)
        try:
            unpack(archive, job)
        except _HeaderRefused as err:
            after = f"after member {job.current!r}" if job.current is not None else "at its start"
            raise UserError(f"{archive}: {err} {after}: refusing a possible memory bomb") from None
        except _IO_ERRORS as err:
            where = f"member {job.current!r}" if job.current is not None else "archive"
            raise UserError(f"{archive}: {where}: cannot extract ({type(err).__name__}: {err})") from None
        finally:
            job.close()


def _provider(sources: dict[str, Path], rel: str) -> Path | None:
    """The archive that moved ``rel`` or its deepest recorded ancestor into place."""
    parts = rel.split("/")
    for depth in range(len(parts), 0, -1):
        found = sources.get("/".join(parts[:depth]))
        if found is not None:
            return found
    return None


def merge_tree(src: Path, dst: Path, archive: Path, sources: dict[str, Path] | None = None) -> None:
    """Move the tree ``src`` (what ``archive`` extracted to) into the folder ``dst``: an entry ``dst``
    lacks is renamed into place whole, a folder both have is merged, and anything else both have
    (two files, a file and a folder) is refused, never overwritten; links are refused too (an
    extraction creates none). ``sources`` records which archive moved each entry (paths relative
    to ``dst``), so that a conflict names the archive that provided the path first. A refusal may
    leave ``dst`` half-merged: callers build it inside a temporary folder."""
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(src / rel) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            target = dst / path
            if entry.is_symlink() or target.is_symlink():
                raise UserError(f"{archive}: {path} is a link; refusing to merge through it")
            if not target.exists():
                os.rename(entry.path, target)
                if sources is not None:
                    sources[path] = archive
            elif entry.is_dir(follow_symlinks=False) and target.is_dir():
                pending.append(path)
            else:
                earlier = _provider(sources, path) if sources is not None else None
                if earlier is not None:
                    who = f"an earlier archive, {earlier}"
                elif sources is not None:
                    who = f"what {dst} already held"
                else:
                    who = "an earlier archive"
                here = "a folder" if entry.is_dir(follow_symlinks=False) else "a file"
                there = "a folder" if target.is_dir() else "a file"
                raise UserError(
                    f"{archive}: {path} ({here}) is also provided by {who} ({there}); refusing to overwrite it"
                )
