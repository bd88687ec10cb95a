"""The one way to read a file a user named: regular files only, sizes bounded, streamed.

Every read of a user-supplied path (a dataset, a split folder, a checkpoint) goes through
this module, so that no input can make the program block, exhaust memory or read a device:

- **Regular files only.** The path is resolved (symlinks followed) and ``os.stat``-ed; a
  folder, FIFO, socket or device (``/dev/zero`` behind a symlink included) is refused before
  it is opened. The file is then opened with ``O_NONBLOCK`` (so a FIFO swapped in after the
  check cannot block the ``open``) and the open descriptor is ``fstat``-ed again, which
  closes the race between the check and the open.
- **Sizes checked before reading.** A file larger than ``max_bytes`` is refused from its
  ``st_size`` without reading a byte; reads are capped as well, in case the file grows.
- **Compressed input streamed with a cap.** ``.gz``, ``.bz2``, ``.xz``/``.lzma`` and
  ``.zip`` (one member) files are decompressed as they are read; past ``max_decompressed``
  bytes of output the read stops with an error, so a small "bomb" never inflates in memory.

Every problem is a :class:`FileError` (a :class:`ValueError`) whose message is one line that
starts with the path: ``"<path>: <problem>"``. A missing file is a :class:`FileMissingError`,
which is also a :class:`FileNotFoundError`.

API:

``check_regular(path) -> os.stat_result``
    The stat of a regular file, or :class:`FileError` naming what the path is instead.
``open_binary(path, *, max_bytes=None) -> BinaryIO``
    The raw bytes of a regular file (no decompression), size checked and read-capped.
``open_stream(path, *, max_bytes=None, max_decompressed=None) -> BinaryIO``
    Like :func:`open_binary`, but a compressed file (by suffix) yields its decompressed
    bytes, capped at ``max_decompressed``.
``open_text(path, *, encoding="utf-8", newline=None, max_bytes=..., max_decompressed=...)``
    :func:`open_stream` decoded as text (``errors="strict"``: bad bytes raise
    :class:`UnicodeDecodeError`).
``read_bytes(path, *, max_bytes=..., max_decompressed=..., decompress=True) -> bytes``
    The whole (decompressed) content, within the caps.
``compression(path) -> str | None``
    The compression a suffix implies: ``"gz"``, ``"bz2"``, ``"xz"``, ``"zip"`` or ``None``.

A cap left as ``None`` is the module's :data:`MAX_BYTES` or :data:`MAX_DECOMPRESSED`, read at
each call (1 GiB each: MovieLens 25M's ``ratings.csv`` is 0.65 GiB); they are set from the
environment variables ``DISENTANGLE_MAX_FILE_BYTES`` and ``DISENTANGLE_MAX_DECOMPRESSED_BYTES``
(a byte count) when the module is imported.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "MAX_BYTES",
    "MAX_DECOMPRESSED",
    "FileError",
    "FileMissingError",
    "check_regular",
    "compression",
    "open_binary",
    "open_stream",
    "open_text",
    "read_bytes",
]

GiB = 1 << 30


def _limit(env: str, default: int) -> int:
    value = os.environ.get(env)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise FileError(f"{env}={value!r}: expected a positive byte count")
    return n


class FileError(ValueError):
    """A file that cannot be read safely; the message is ``"<path>: <problem>"``."""


class FileMissingError(FileError, FileNotFoundError):
    """The named file does not exist."""


_ENV_BYTES = "DISENTANGLE_MAX_FILE_BYTES"
_ENV_DECOMPRESSED = "DISENTANGLE_MAX_DECOMPRESSED_BYTES"
MAX_BYTES = _limit(_ENV_BYTES, GiB)
MAX_DECOMPRESSED = _limit(_ENV_DECOMPRESSED, GiB)

_SUFFIXES = {".gz": "gz", ".gzip": "gz", ".bz2": "bz2", ".xz": "xz", ".lzma": "xz",
             ".zip": "zip"}
#: What a corrupt, encrypted or unsupported compressed file raises while it is read
#: (zipfile: RuntimeError for a password, NotImplementedError for an unknown method).
_DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
                         RuntimeError, NotImplementedError)
_NAMES = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zip": "zip"}
_KINDS = ((stat.S_ISDIR, "is a folder"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
          (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
          (stat.S_ISSOCK, "is a socket"))


def _size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _not_regular(path: Path, st: os.stat_result) -> FileError:
    what = next((text for test, text in _KINDS if test(st.st_mode)), "is not a regular file")
    real = os.path.realpath(path)
    via = f" (a link to {real})" if real != os.path.abspath(path) else ""
    return FileError(f"{path}: {what}{via}; expected a regular file")


def _os_error(path: Path, e: OSError) -> FileError:
    if isinstance(e, FileNotFoundError):
        return FileMissingError(f"{path}: no such file")
    if isinstance(e, PermissionError):
        return FileError(f"{path}: permission denied")
    if isinstance(e, IsADirectoryError):
        return FileError(f"{path}: is a folder; expected a regular file")
    return FileError(f"{path}: cannot read ({e.strerror or e})")


def compression(path: str | os.PathLike) -> str | None:
    """The compression the file name's suffix implies, or ``None`` for a plain file."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def check_regular(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed); :class:`FileError` unless it is a regular
    file (:class:`FileMissingError` when there is nothing there)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise _os_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st)
    return st


def _check_size(path: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise FileError(f"{path}: {_size(size)}, larger than the {_size(max_bytes)} limit "
                        f"({_ENV_BYTES})")


class _Capped(io.RawIOBase):
    """A read-only stream over ``inner`` that fails once more than ``cap`` bytes come out,
    and turns decompression errors into :class:`FileError` naming ``path``."""

    def __init__(self, inner, path: Path, cap: int, what: str, env: str, owned=()):
        super().__init__()
        self._inner, self._path, self._cap, self._what, self._env = inner, path, cap, what, env
        self._owned = (inner, *owned)  # closed in this order: the reader before its source
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._cap - self._count + 1)
        try:
            data = self._inner.read(want)
        except _DECOMPRESSION_ERRORS as e:
            kind = compression(self._path)
            raise FileError(f"{self._path}: not a valid {_NAMES[kind]} file ({e})" if kind else
                            f"{self._path}: cannot read ({e})") from None
        self._count += len(data)
        if self._count > self._cap:
            raise FileError(f"{self._path}: {self._what} exceeds the {_size(self._cap)} limit "
                            f"({self._env})")
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            for f in self._owned:
                f.close()
        super().close()


def _open_fd(path: Path, max_bytes: int) -> BinaryIO:
    """The opened regular file, re-checked with ``fstat`` on the descriptor."""
    check_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st)
        _check_size(path, st.st_size, max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def open_binary(path: str | os.PathLike, *, max_bytes: int | None = None) -> BinaryIO:
    """A buffered binary stream of the regular file ``path``: refused when larger than
    ``max_bytes``; reading past ``max_bytes`` (a growing file) raises :class:`FileError`."""
    path = Path(path)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    raw = _open_fd(path, max_bytes)
    return io.BufferedReader(_Capped(raw, path, max_bytes, "file", _ENV_BYTES))


def _decompressor(path: Path, raw: BinaryIO, kind: str):
    """The decompressing reader over ``raw`` and the objects to close with it."""
    try:
        if kind == "gz":
            return gzip.GzipFile(fileobj=raw, mode="rb"), ()
        if kind == "bz2":
            return bz2.BZ2File(raw, mode="rb"), ()
        if kind == "xz":
            return lzma.LZMAFile(raw, mode="rb"), ()
        archive = zipfile.ZipFile(raw)
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            archive.close()
            raise FileError(f"{path}: a zip archive with {len(members)} files; expected "
                            f"exactly one")
        return archive.open(members[0]), (archive,)
    except _DECOMPRESSION_ERRORS as e:
        raise FileError(f"{path}: not a valid {_NAMES[kind]} file ({e})") from None


def open_stream(path: str | os.PathLike, *, max_bytes: int | None = None,
                max_decompressed: int | None = None) -> BinaryIO:
    """A buffered binary stream of ``path``'s content: the file itself, or for a compressed
    suffix (see :func:`compression`) its decompressed bytes, streamed and capped at
    ``max_decompressed`` (more raises :class:`FileError`); the file itself is capped at
    ``max_bytes`` either way."""
    path = Path(path)
    kind = compression(path)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    max_decompressed = MAX_DECOMPRESSED if max_decompressed is None else max_decompressed
    if kind is None:
        return open_binary(path, max_bytes=max_bytes)
    # zipfile seeks to the central directory: it gets the descriptor itself (size checked)
    raw = _open_fd(path, max_bytes) if kind == "zip" else open_binary(path, max_bytes=max_bytes)
    try:
        inner, owned = _decompressor(path, raw, kind)
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(_Capped(inner, path, max_decompressed, "decompressed content",
                                     _ENV_DECOMPRESSED, owned=(*owned, raw)))


def open_text(path: str | os.PathLike, *, encoding: str = "utf-8", newline: str | None = None,
              max_bytes: int | None = None, max_decompressed: int | None = None) -> TextIO:
    """:func:`open_stream` decoded as text (strict: undecodable bytes raise
    :class:`UnicodeDecodeError`); ``newline`` as for :func:`open`."""
    return io.TextIOWrapper(open_stream(path, max_bytes=max_bytes,
                                        max_decompressed=max_decompressed),
                            encoding=encoding, newline=newline)


def read_bytes(path: str | os.PathLike, *, max_bytes: int | None = None,
               max_decompressed: int | None = None, decompress: bool = True) -> bytes:
    """The whole content of ``path`` (decompressed unless ``decompress=False``) within the
    caps of :func:`open_stream`."""
    opener = open_stream if decompress else open_binary
    kwargs = {"max_decompressed": max_decompressed} if decompress else {}
    with opener(path, max_bytes=max_bytes, **kwargs) as f:
        return f.read()
