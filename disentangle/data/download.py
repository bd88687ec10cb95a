"""``disentangle download NAME``: fetch a public dataset's files, check them, put them in place.

Each dataset of :data:`CATALOGUE` lists where its files come from (the publisher's archive
for MovieLens, the LightGCN repository at a fixed commit for the graph sets) and a pin for
every file a loader reads:

- ``sha256``: the SHA-256 of the file, taken from bytes that were available when the pin was
  written (the SHA256SUMS of the copies this project was developed with, whose provenance
  is recorded, and the blobs of the LightGCN repository at the pinned commit);
- ``git_blob``: for a file whose bytes were not available but whose git blob id is known
  from the tree of the pinned commit, that id: the SHA-1 of ``"blob <size>\\0"`` followed
  by the content, the same content guarantee git itself relies on;
- neither (``ml-20m``): nothing could be verified here. Such a dataset is refused unless
  the user asks for an unchecked download (``--no-verify``); no hash was ever guessed.

How a file is fetched (:func:`fetch`):

1. Into ``NAME.part`` beside its final place. A ``.part`` left by an interrupted run is
   continued with an HTTP ``Range`` request; a server that answers with the whole file
   restarts it.
2. With a progress bar on a terminal (tqdm), a timeout on every read, and a check that the
   bytes received are the ``Content-Length`` announced (a cut connection keeps the
   ``.part`` for the next run).
3. Checked against its pin; a mismatch deletes the ``.part`` (it cannot be resumed into a
   good file).
4. Moved into place with :func:`os.replace` (atomic on one file system): a file under its
   final name is always complete.

An archive's members are extracted the same way (each to a ``.part``, checked, then
replaced) and the archive is deleted once every member is in place. Every failure is a
:class:`DownloadError` with a one-line message naming the URL or file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from .sources import DATA_ENV, data_home

_BLOCK = 1 << 16
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
#: kuandeng/LightGCN at the commit whose Data/ folder the pins were read from.
_LIGHTGCN = ("https://raw.githubusercontent.com/kuandeng/LightGCN/"
             "b067ec05f16a24e0e1efe63cd82385f0c469af20/Data")


class DownloadError(Exception):
    """A download that failed; the message is one line naming the URL or the file."""


@dataclasses.dataclass(frozen=True)
class Pin:
    """What a file must hash to; both ``None``: unverified (see the module docstring)."""

    sha256: str | None = None
    git_blob: str | None = None

    @property
    def verified(self) -> bool:
        return self.sha256 is not None or self.git_blob is not None

    def mismatch(self, path: Path) -> str | None:
        """Why ``path`` does not match the pin, or ``None`` when it does (or nothing is pinned)."""
        if self.sha256 is not None:
            got = _digest(path, hashlib.sha256())
            if got != self.sha256:
                return f"SHA-256 {got}, expected {self.sha256}"
        if self.git_blob is not None:
            blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
            got = _digest(path, blob)
            if got != self.git_blob:
                return f"git blob id {got}, expected {self.git_blob}"
        return None


@dataclasses.dataclass(frozen=True)
class Resource:
    """One URL. A plain file is saved as ``name`` and checked against ``pin``; an archive
    (``members`` given) is unpacked: member path in the archive -> (saved name, pin)."""

    url: str
    name: str
    pin: Pin = Pin()
    members: dict[str, tuple[str, Pin]] = dataclasses.field(default_factory=dict)

    def files(self) -> list[tuple[str, Pin]]:
        """The files this resource leaves in the dataset folder, with their pins."""
        return list(self.members.values()) if self.members else [(self.name, self.pin)]


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    resources: tuple[Resource, ...]
    note: str = ""

    @property
    def unverified(self) -> list[str]:
        return [name for r in self.resources for name, pin in r.files() if not pin.verified]


def _movielens(name: str, members: dict[str, tuple[str, Pin]], note: str = "") -> Entry:
    return Entry(name, (Resource(f"{_GROUPLENS}/{name}.zip", f"{name}.zip",
                                 members={f"{name}/{m}": v for m, v in members.items()}),), note)


def _lightgcn(name: str, train: Pin, test: Pin) -> Entry:
    return Entry(name, (Resource(f"{_LIGHTGCN}/{name}/train.txt", "train.txt", train),
                        Resource(f"{_LIGHTGCN}/{name}/test.txt", "test.txt", test)),
                 "the LightGCN/NGCF split, kuandeng/LightGCN @ b067ec0")


def _sha(h: str) -> Pin:
    return Pin(sha256=h)


#: Every dataset ``disentangle download`` knows. Archive hashes are not pinned (no copy of
#: the archives was available); the members a loader reads are.
CATALOGUE: dict[str, Entry] = {e.name: e for e in [
    _movielens("ml-latest-small", {
        "ratings.csv": ("ratings.csv", _sha(
            "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646")),
        "movies.csv": ("movies.csv", _sha(
            "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07")),
        "README.txt": ("README.txt", _sha(
            "caa1eb1d1d113578e9dbb36b37398404e00f379492b7aa31df0b30c855017095"))},
        "the September 2018 snapshot; GroupLens may update 'latest' files"),
    _movielens("ml-100k", {
        "u.data": ("u.data", _sha(
            "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490")),
        "u.item": ("u.item", _sha(
            "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701")),
        "u.genre": ("u.genre", _sha(
            "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb")),
        "README": ("README", _sha(
            "d5f41f88d1a96b8faefed3c2f51fce1fca3be1ba6ab0d06e346898ffae920de9"))}),
    _movielens("ml-1m", {
        "ratings.dat": ("ratings.dat", Pin(git_blob="77a7c4b150f588c23bb9e1f068aa996c0b413695")),
        "movies.dat": ("movies.dat", _sha(
            "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9")),
        "README": ("README", _sha(
            "2d5ddce86ccbd247207456165827b4b9ddf27282bca93807d4c763e28414f133"))}),
    _movielens("ml-20m", {"ratings.csv": ("ratings.csv", Pin()),
                          "movies.csv": ("movies.csv", Pin())},
               "no checksum could be verified here: download with --no-verify"),
    _lightgcn("gowalla",
              _sha("7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62"),
              _sha("099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3")),
    _lightgcn("yelp2018", Pin(git_blob="cda12361055ba448ae4bd1070f6000c16dea8f22"),
              _sha("9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe")),
    _lightgcn("amazon-book", Pin(git_blob="6ef55159c5f1fd7f6d86eb9ff290d0cc2854ac99"),
              _sha("6250754994dd953b91b48dccdd77a73f318e0634b4757c2abfcc9d33a54ab0f5")),
]}


def default_dir(name: str) -> Path:
    """Where ``download`` puts ``name`` without ``--dir``: ``$DISENTANGLE_DATA/name``, else
    the data home's ``name`` folder (both are where the loaders look)."""
    root = os.environ.get(DATA_ENV)
    return (Path(root) if root else data_home()) / name


def download(name: str, dest: str | os.PathLike | None = None, *, verify: bool = True,
             timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Fetch dataset ``name`` into ``dest`` (default :func:`default_dir`) and return it.

    Files already in place that match their pins are kept. With ``verify=False`` nothing is
    checked (the only way to fetch a file without a pin); ``progress=None`` shows bars on a
    terminal only.
    """
    if name not in CATALOGUE:
        raise ValueError(f"unknown dataset {name!r} to download; known: "
                         f"{', '.join(CATALOGUE)}")
    entry = CATALOGUE[name]
    if verify and entry.unverified:
        raise DownloadError(f"{name}: no checksum is pinned for {', '.join(entry.unverified)} "
                            f"(none could be verified when the catalogue was written); give "
                            f"--no-verify to download it unchecked")
    folder = Path(dest) if dest is not None else default_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    for res in entry.resources:
        if all(_in_place(folder / f, pin, verify) for f, pin in res.files()):
            continue
        target = folder / res.name
        fetch(res.url, target, res.pin if verify else Pin(), timeout=timeout, progress=show)
        if res.members:
            try:
                _extract(target, folder, res.members, verify)
            finally:  # a bad member means a bad archive: fetch it anew next time
                target.unlink(missing_ok=True)
    return folder


def _in_place(path: Path, pin: Pin, verify: bool) -> bool:
    return path.is_file() and (not verify or pin.mismatch(path) is None)


def fetch(url: str, dest: Path, pin: Pin = Pin(), *, timeout: float = 60.0,
          progress: bool = False) -> None:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when present), check it
    against ``pin`` and move it into place (see the module docstring)."""
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "disentangle", "Accept-Encoding": "identity"}
    if done:
        headers["Range"] = f"bytes={done}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:  # the .part is already whole (or longer): check it
            e.close()
            return _finish(url, part, dest, pin)
        e.close()
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:
        raise DownloadError(f"{url}: timed out after {timeout:g} s waiting for the server; "
                            f"run the command again") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect ({e.reason})") from None
    with response:
        if done and response.status != 206:
            done = 0  # the server sent the whole file: start the .part over
        elif done and not response.headers.get("Content-Range", "").startswith(
                f"bytes {done}-"):
            raise DownloadError(f"{url}: the server resumed elsewhere than byte {done} "
                                f"(Content-Range {response.headers.get('Content-Range')!r}); "
                                f"delete {part} and run the command again")
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None and length.isdigit() else None
        got = done
        try:
            with open(part, "ab" if done else "wb") as f, \
                    tqdm(total=total, initial=done, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=dest.name, disable=not progress,
                         leave=False) as bar:
                while block := response.read1(_BLOCK):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        except TimeoutError:
            raise DownloadError(f"{url}: timed out: no data for {timeout:g} s after "
                                f"{got} bytes; run the command again to resume from "
                                f"{part.name}") from None
        except http.client.IncompleteRead:
            pass  # reported below with the byte counts
        except OSError as e:
            raise DownloadError(f"{url}: connection failed after {got} bytes ({e}); run the "
                                f"command again to resume") from None
    if total is not None and got < total:
        raise DownloadError(f"{url}: truncated: the connection closed after {got} of {total} "
                            f"bytes; run the command again to resume from {part.name}")
    _finish(url, part, dest, pin)


def _finish(url: str, part: Path, dest: Path, pin: Pin) -> None:
    problem = pin.mismatch(part)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: checksum mismatch: {problem} (the download was deleted; "
                            f"the file at the source is not the one pinned)")
    os.replace(part, dest)


def _extract(archive: Path, folder: Path, members: dict[str, tuple[str, Pin]],
             verify: bool) -> None:
    """Each named member of ``archive`` to ``folder``, through a checked ``.part``."""
    try:
        with zipfile.ZipFile(archive) as z:
            for member, (name, pin) in members.items():
                dest = folder / name
                part = dest.with_name(dest.name + ".part")
                try:
                    with z.open(member) as src, open(part, "wb") as out:
                        while block := src.read(_BLOCK):
                            out.write(block)
                except KeyError:
                    raise DownloadError(f"{archive}: no member {member}; the archive is not "
                                        f"the expected one") from None
                _finish(f"{archive}!{member}", part, dest, pin if verify else Pin())
    except (zipfile.BadZipFile, EOFError) as e:
        raise DownloadError(f"{archive}: not a valid zip archive ({e}); it was deleted, run "
                            f"the command again") from None


def _digest(path: Path, h) -> str:
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
