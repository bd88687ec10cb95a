"""Reads of user-supplied files are bounded: only regular files are opened, sizes are checked
before reading, compressed input is streamed with a cap, and an all-zero file is refused after
its first block. Each case asserts the exception type and that the message names the file."""
import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from disentangle import files
from disentangle.data import LoadOptions, load_dataset
from disentangle.data.delimited import load_csv
from disentangle.data.sources import DataError

GiB = 1 << 30


def bytes_read() -> int:
    """Bytes this process has read with read() so far (Linux ``/proc/self/io``)."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        pytest.skip("/proc/self/io is not available")
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar")))


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` zero bytes that takes no disk space (never written)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# -- disentangle.files: what is opened at all ---------------------------------------------
def _fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def _dev_zero_link(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    return tmp_path / "zero.csv"


def _folder(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    return tmp_path / "folder.csv"


NOT_REGULAR = [(_fifo, "is a FIFO (named pipe)"),
               (_dev_zero_link, "is a character device (a link to /dev/zero)"),
               (_folder, "is a folder")]


@pytest.mark.parametrize("make, message", NOT_REGULAR)
def test_only_regular_files_are_opened(tmp_path, make, message):
    # in a subprocess with a timeout: if a FIFO were opened, the read would block forever
    path = make(tmp_path)
    code = ("import sys\nfrom disentangle import files\n"
            "try:\n    files.read_bytes(sys.argv[1])\n"
            "except files.FileError as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"FileError {path}: {message}; expected a regular file"


@pytest.mark.parametrize("make, message", NOT_REGULAR)
def test_check_regular_refuses_from_stat_alone(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(files.FileError) as err:
        files.check_regular(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_missing_file_is_a_file_error_and_a_file_not_found_error(tmp_path):
    with pytest.raises(files.FileMissingError) as err:
        files.open_binary(tmp_path / "nope")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    assert str(err.value) == f"{tmp_path / 'nope'}: no such file"


def test_a_file_over_the_size_cap_is_refused_before_reading(tmp_path):
    path = sparse(tmp_path / "big.csv", 2 * GiB)
    before = bytes_read()
    with pytest.raises(files.FileError) as err:
        files.read_bytes(path)
    assert bytes_read() - before < 1 << 20
    assert str(err.value) == (f"{path}: 2.0 GiB, larger than the 1.0 GiB limit "
                              f"(DISENTANGLE_MAX_FILE_BYTES)")
    with pytest.raises(DataError, match=f"^{path}: 2.0 GiB"):
        load_csv(path)


# -- compressed input ------------------------------------------------------------------------
def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ratings.csv", data)
    return buffer.getvalue()


COMPRESSORS = [(".gz", gzip.compress), (".bz2", lambda b: bz2.compress(b, 1)),
               (".xz", lzma.compress),
               (".zip", _zip)]
BOMB = b"".join(b"u%d,i%d\n" % (k % 50, k % 17) for k in range(300_000))  # 2 MiB of rows


@pytest.mark.parametrize("suffix, compress", COMPRESSORS)
def test_compressed_files_are_read(tmp_path, suffix, compress):
    path = tmp_path / f"x.csv{suffix}"
    path.write_bytes(compress(b"user,item\nu1,i1\nu2,i2\n"))
    assert files.read_bytes(path) == b"user,item\nu1,i1\nu2,i2\n"
    assert set(load_csv(path, LoadOptions(min_user_interactions=1)).data.user_ids) == {"u1", "u2"}


@pytest.mark.parametrize("suffix, compress", COMPRESSORS)
def test_a_bomb_is_streamed_and_stopped_at_the_cap(tmp_path, suffix, compress, monkeypatch):
    path = tmp_path / f"bomb.csv{suffix}"
    path.write_bytes(compress(BOMB))
    assert path.stat().st_size < len(BOMB) / 20  # small on disk
    cap = 1 << 20
    with pytest.raises(files.FileError) as err:
        with files.open_stream(path, max_decompressed=cap) as f:
            total = 0
            while chunk := f.read(1 << 16):
                total += len(chunk)
    assert total <= cap
    assert str(err.value) == (f"{path}: decompressed content exceeds the 1.0 MiB limit "
                              f"(DISENTANGLE_MAX_DECOMPRESSED_BYTES)")
    monkeypatch.setattr(files, "MAX_DECOMPRESSED", cap)  # the default cap of every reader
    with pytest.raises(DataError, match=f"^{path}: decompressed content exceeds"):
        load_csv(path)


def _zip_with(flag: int = 0, method: int | None = None) -> bytes:
    """A one-file zip whose headers claim encryption (flag bit 0) or another method."""
    data = bytearray(_zip(b"u,i\n"))
    central = data.find(b"PK\x01\x02")
    data[6] |= flag
    data[central + 8] |= flag
    if method is not None:
        data[8] = data[central + 10] = method
    return bytes(data)


@pytest.mark.parametrize("suffix, content, message", [
    (".zip", _zip_with(flag=1), "not a valid zip file (File <ZipInfo filename='ratings.csv'"),
    (".zip", _zip_with(method=93), "not a valid zip file (That compression method is not "
                                   "supported)"),
    (".gz", b"u,i\n", "not a valid gzip file"),
    (".gz", gzip.compress(b"u,i\n" * 1000)[:40], "not a valid gzip file"),
    (".bz2", b"BZh9 not really", "not a valid bzip2 file"),
    (".xz", b"\xfd7zXZ\x00 cut", "not a valid xz file"),
    (".zip", b"PK\x03\x04 cut", "not a valid zip file"),
])
def test_broken_compressed_files_are_refused_naming_the_file(tmp_path, suffix, content, message):
    path = tmp_path / f"x.csv{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_zip_with_several_files_is_refused(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.csv", "u,i\n")
        z.writestr("b.csv", "u,i\n")
    with pytest.raises(files.FileError, match=f"^{path}: a zip archive with 2 files"):
        files.read_bytes(path)


# -- an all-zero file ------------------------------------------------------------------------
def _ml_100k(tmp_path):
    root = tmp_path / "ml-100k"
    root.mkdir()
    sparse(root / "u.data", GiB)
    (root / "u.item").write_text("1|A|x|x|x|0\n")
    (root / "u.genre").write_text("unknown|0\n")
    return root / "u.data", lambda: load_dataset("ml-100k", root)


def _csv(tmp_path):
    path = sparse(tmp_path / "zeros.csv", GiB)
    return path, lambda: load_csv(path)


def _split_dir(tmp_path):
    from disentangle.data import load_split_dir

    root = tmp_path / "pro_sg"
    root.mkdir()
    (root / "unique_sid.txt").write_text("1\n")
    for name in ("validation_tr", "validation_te", "test_tr", "test_te"):
        (root / f"{name}.csv").write_text("uid,sid\n1,0\n")
    sparse(root / "train.csv", GiB)
    return root / "train.csv", lambda: load_split_dir(root)


@pytest.mark.parametrize("make", [_csv, _ml_100k, _split_dir])
def test_a_1_gib_zero_file_is_refused_after_its_first_block(tmp_path, make):
    path, load = make(tmp_path)
    before = bytes_read()
    with pytest.raises(DataError) as err:
        load()
    assert bytes_read() - before < 8 << 20  # a block or a line, not the whole GiB
    assert str(err.value).startswith(f"{path}: line 1: binary data (a NUL byte)")


@pytest.mark.parametrize("name", ["x.csv", "u.data"])
def test_a_line_without_end_is_refused_after_the_line_limit(tmp_path, name):
    """Text that never ends its line is refused after MAX_LINE bytes, not read whole."""
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(b"a" * (3 << 20))  # 3 MiB, then never a newline
    if name == "u.data":
        (tmp_path / "u.item").write_text("1|A|x|x|x|0\n")
        (tmp_path / "u.genre").write_text("unknown|0\n")
        load = lambda: load_dataset("ml-100k", tmp_path)  # noqa: E731
    else:
        load = lambda: load_csv(path)  # noqa: E731
    before = bytes_read()
    with pytest.raises(DataError) as err:
        load()
    assert bytes_read() - before < 3 << 20
    assert str(err.value) == f"{path}: line 1: longer than 1048576 bytes; expected " + (
        "lines of text" if name == "u.data" else "delimited text")
