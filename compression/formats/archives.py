"""Listing and reading untrusted zip / tar(.gz) archives member by member, never extracting them.

Why hand-written checks: `zipfile.extractall` and `tarfile.extractall` are unsafe by default on
hostile archives. zipfile only sanitises names (and happily inflates a 1 GB zero member from a
1 MB upload); tarfile (before the 3.14 default `filter="data"`) follows `../` and absolute
names, creates symlinks/hardlinks pointing anywhere and device nodes, and reads pax/GNU long-name
headers of any size into memory. So nothing here ever calls extract/extractall: `walk` checks
every member's name, type and size (and the archive's compression ratio) first, and yields only
regular files with a bounded reader; callers copy the few members they need to names they choose.
"""
from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from compression.formats._errors import UNSUPPORTED, ModelFormatError
from compression.formats.limits import MAX_ARCHIVE_MEMBERS, MAX_ARCHIVE_RATIO, MAX_UNPACKED_BYTES, RATIO_SLACK_BYTES

ZIP, TAR = "zip", "tar"


def archive_kind(head: bytes) -> str | None:
    """By content: zip local header, gzip magic, or an uncompressed POSIX tar header."""
    if head.startswith(b"PK\x03\x04"):
        return ZIP
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return TAR
    return None


def zip_entry_count(path: Path) -> int | None:
    """Entries declared by the end-of-central-directory record, read before zipfile builds a
    ZipInfo per entry (millions of tiny entries would otherwise cost gigabytes). None: no record."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)   # the same reader ZipFile uses; private but long stable
    except (OSError, zipfile.BadZipFile, ValueError, struct.error):
        return None
    return None if not end else end[4]


@dataclass(frozen=True)
class Member:
    name: str      # normalised relative path, "/"-separated
    size: int      # uncompressed bytes (declared; readers enforce it)
    open: Callable[[], IO[bytes]]


def check_name(raw: str) -> str:
    """Refuse absolute paths, drive letters, backslashes, NULs and any '..' component."""
    if not raw or "\x00" in raw or "\\" in raw:
        raise ModelFormatError(f"archive member name {raw[:100]!r} is not allowed")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ModelFormatError(f"archive member {raw[:100]!r} has an absolute path; refused")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ModelFormatError(f"archive member {raw[:100]!r} points outside the archive ('..'); refused")
    return "/".join(parts)


class _Budget:
    """Total uncompressed bytes: bounded absolutely and by the compression ratio (zip bombs)."""

    def __init__(self, compressed_size: int):
        self.limit = min(MAX_UNPACKED_BYTES, compressed_size * MAX_ARCHIVE_RATIO + RATIO_SLACK_BYTES)
        self.used = 0

    def take(self, n: int, what: str) -> None:
        self.used += n
        if self.used > MAX_UNPACKED_BYTES:
            raise ModelFormatError(f"archive unpacks to more than {MAX_UNPACKED_BYTES} bytes ({what}); refused")
        if self.used > self.limit:
            raise ModelFormatError(f"archive unpacks to over {MAX_ARCHIVE_RATIO}x its size ({what}): a compression "
                                   "ratio typical of a zip bomb; refused")


def walk(path: Path, kind: str) -> Iterator[Member]:
    """Every regular-file member, after checks. Raises ModelFormatError on anything hostile; for a
    tar the checks happen as the stream is read, so a caller must consume the whole iterator."""
    path = Path(path)
    if kind == ZIP:
        yield from _walk_zip(path)
    else:
        yield from _walk_tar(path)


def _walk_zip(path: Path) -> Iterator[Member]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelFormatError(f"not a readable zip archive (truncated or corrupt?): {exc}", UNSUPPORTED) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise ModelFormatError(f"archive has too many members ({len(infos)} > {MAX_ARCHIVE_MEMBERS})")
        budget = _Budget(path.stat().st_size)
        seen: set[str] = set()
        files = []
        for info in infos:   # the central directory lists everything: check all before reading any
            name = check_name(info.filename)
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFDIR, 0):
                what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise ModelFormatError(f"archive member {name!r} is {what}; only regular files are accepted")
            if info.flag_bits & 0x1:
                raise ModelFormatError(f"archive member {name!r} is encrypted")
            if name in seen:
                raise ModelFormatError(f"archive member {name!r} appears twice")
            seen.add(name)
            if info.is_dir():
                continue
            if info.file_size > 64 * 1024 and info.file_size > max(info.compress_size, 1) * MAX_ARCHIVE_RATIO:
                raise ModelFormatError(f"archive member {name!r} claims {info.file_size} bytes from "
                                       f"{info.compress_size} compressed: a zip bomb; refused")
            budget.take(info.file_size, name)
            files.append((name, info))
        for name, info in files:
            yield Member(name, info.file_size, lambda info=info: _Bounded(zf.open(info), info.file_size))


class _Bounded(io.RawIOBase):
    """Reads at most `size` bytes; reading past the declared size is an error (lying headers)."""

    def __init__(self, inner: IO[bytes], size: int):
        self.inner, self.left = inner, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = len(b)
        if self.left <= 0:
            if want and self.inner.read(1):
                raise ModelFormatError("archive member holds more bytes than its header declares")
            return 0
        try:
            data = self.inner.read(min(want, self.left))
        except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
            raise ModelFormatError(f"archive member is corrupt or truncated: {exc}") from None
        b[: len(data)] = data
        self.left -= len(data)
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class _Limited(io.RawIOBase):
    """The decompressed tar stream, cut off at the budget (also bounds pax/GNU headers tarfile reads)."""

    def __init__(self, inner: IO[bytes], budget: _Budget):
        self.inner, self.budget = inner, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self.inner.read(len(b))
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ModelFormatError(f"the compressed archive is corrupt or truncated: {exc}") from None
        self.budget.take(len(data), "decompressed stream")
        b[: len(data)] = data
        return len(data)


def _walk_tar(path: Path) -> Iterator[Member]:
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        budget = _Budget(path.stat().st_size)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
        limited = io.BufferedReader(_Limited(stream, budget), 1 << 16)
        try:
            tf = tarfile.open(fileobj=limited, mode="r|")   # stream mode: sequential, nothing cached
        except tarfile.TarError as exc:
            raise ModelFormatError(f"not a readable tar archive: {exc}", UNSUPPORTED) from None
        count, seen, declared = 0, set(), 0
        with tf:
            while True:
                try:
                    info = tf.next()
                except (tarfile.TarError, EOFError) as exc:
                    raise ModelFormatError(f"tar archive is corrupt or truncated: {exc}") from None
                if info is None:
                    break
                count += 1
                if count > MAX_ARCHIVE_MEMBERS:
                    raise ModelFormatError(f"archive has too many members (> {MAX_ARCHIVE_MEMBERS})")
                name = check_name(info.name)
                if info.issym() or info.islnk():
                    raise ModelFormatError(f"archive member {name!r} is a {'symlink' if info.issym() else 'hardlink'} "
                                           f"(to {info.linkname[:100]!r}); only regular files are accepted")
                if info.isdir():
                    continue
                if not info.isreg() or info.issparse():
                    raise ModelFormatError(f"archive member {name!r} is not a regular file (device, fifo or "
                                           "sparse file); refused")
                if name in seen:
                    raise ModelFormatError(f"archive member {name!r} appears twice")
                seen.add(name)
                declared += info.size
                if declared > budget.limit:   # refuse before decompressing the member
                    raise ModelFormatError(f"archive unpacks to more than {budget.limit} bytes (at {name!r}): "
                                           "too large or a compression ratio typical of a zip bomb; refused")

                def opener(info=info):
                    f = tf.extractfile(info)
                    if f is None:
                        raise ModelFormatError(f"archive member {info.name!r} cannot be read")
                    return _Bounded(f, info.size)

                yield Member(name, info.size, opener)
        if count == 0:
            raise ModelFormatError("empty or unreadable tar archive", UNSUPPORTED)


def read_member(member: Member, limit: int) -> bytes:
    if member.size > limit:
        raise ModelFormatError(f"archive member {member.name!r} is too large ({member.size} > {limit} bytes)")
    with member.open() as f:
        data = f.read(limit + 1)
    if len(data) != member.size:
        raise ModelFormatError(f"archive member {member.name!r} is truncated")
    return data


def copy_member(member: Member, dest: Path) -> None:
    """Write one regular member to `dest` (a name the caller chose); exactly `size` bytes or an error."""
    written = 0
    with member.open() as src, open(dest, "xb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            out.write(chunk)
    if written != member.size:
        raise ModelFormatError(f"archive member {member.name!r} is truncated ({written} of {member.size} bytes)")
