"""``disentangle download``: against a local HTTP server on the loopback address (good file,
truncated file, wrong checksum, 404, slow server, resume of a partial file, archives)."""
import hashlib
import http.server
import io
import threading
import time
import zipfile
from typing import ClassVar

import pytest
from click.testing import CliRunner

from disentangle.data import download as dl
from disentangle.data.download import CATALOGUE, DownloadError, Entry, Pin, Resource, fetch
from disentangle_cli.main import main

GOOD = bytes(range(256)) * 800  # 200 KiB, several blocks
SHA = hashlib.sha256(GOOD).hexdigest()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    """``/good`` (Range supported), ``/norange`` (Range ignored), ``/truncated`` (announces
    the whole length, sends half), ``/slow`` (headers, then silence), anything else 404."""

    files: ClassVar[dict] = {}
    log: ClassVar[list] = []

    def do_GET(self):
        Handler.log.append((self.path, self.headers.get("Range")))
        body = Handler.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404, "Not Found")
            return
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:100])
            self.wfile.flush()
            time.sleep(2)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and self.path != "/norange":
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            start = start - 1 if self.path == "/offbyone" else start
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:]
        if self.path == "/truncated":
            sent = sent[:len(sent) // 2]
        self.wfile.write(sent)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.files = {"/good": GOOD, "/norange": GOOD, "/truncated": GOOD, "/slow": GOOD,
                     "/wrong": GOOD[::-1], "/offbyone": GOOD}
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def clear_log():
    Handler.log.clear()


def test_a_good_file_is_checked_and_moved_into_place(server, tmp_path):
    dest = tmp_path / "f.bin"
    fetch(f"{server}/good", dest, Pin(sha256=SHA))
    assert dest.read_bytes() == GOOD
    assert not (tmp_path / "f.bin.part").exists()


def test_a_git_blob_pin_is_checked_as_git_computes_it(server, tmp_path):
    blob = hashlib.sha1(b"blob %d\0" % len(GOOD) + GOOD).hexdigest()
    fetch(f"{server}/good", tmp_path / "f.bin", Pin(git_blob=blob))
    assert (tmp_path / "f.bin").read_bytes() == GOOD
    with pytest.raises(DownloadError, match="git blob id"):
        fetch(f"{server}/good", tmp_path / "g.bin", Pin(git_blob="0" * 40))


def test_a_wrong_checksum_deletes_the_download_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/wrong", dest, Pin(sha256=SHA))
    message = str(err.value)
    assert message.startswith(f"{server}/wrong: checksum mismatch: SHA-256 ")
    assert f"expected {SHA}" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_file_keeps_the_partial_and_the_next_run_resumes_it(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"truncated: the connection closed after 102400 "
                                            r"of 204800 bytes; run the command again"):
        fetch(f"{server}/truncated", dest, Pin(sha256=SHA))
    part = tmp_path / "f.bin.part"
    assert part.read_bytes() == GOOD[:len(GOOD) // 2] and not dest.exists()
    fetch(f"{server}/good", dest, Pin(sha256=SHA))  # the same file, now served whole
    assert dest.read_bytes() == GOOD and not part.exists()
    assert Handler.log[-1] == ("/good", f"bytes={len(GOOD) // 2}-")


def test_a_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(GOOD[:1000])
    fetch(f"{server}/good", tmp_path / "f.bin", Pin(sha256=SHA))
    assert (tmp_path / "f.bin").read_bytes() == GOOD
    assert Handler.log == [("/good", "bytes=1000-")]


def test_a_server_that_ignores_the_range_restarts_the_partial(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"junk" * 10)
    fetch(f"{server}/norange", tmp_path / "f.bin", Pin(sha256=SHA))
    assert (tmp_path / "f.bin").read_bytes() == GOOD


def test_a_server_that_resumes_elsewhere_is_refused_and_the_partial_kept(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(GOOD[:1000])
    with pytest.raises(DownloadError, match="resumed elsewhere than byte 1000 "
                                            "\\(Content-Range 'bytes 999-204799/204800'\\)"):
        fetch(f"{server}/offbyone", tmp_path / "f.bin", Pin(sha256=SHA))
    assert (tmp_path / "f.bin.part").read_bytes() == GOOD[:1000]


def test_a_complete_partial_is_checked_when_the_server_says_416(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(GOOD)
    fetch(f"{server}/good", tmp_path / "f.bin", Pin(sha256=SHA))
    assert (tmp_path / "f.bin").read_bytes() == GOOD


def test_404_is_one_line_naming_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=rf"^{server}/missing: HTTP 404 Not Found$"):
        fetch(f"{server}/missing", tmp_path / "f.bin", Pin(sha256=SHA))
    assert list(tmp_path.iterdir()) == []


def test_a_slow_server_times_out_and_keeps_what_arrived(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out: no data for 0.3 s after 100 bytes; "
                                            r"run the command again to resume"):
        fetch(f"{server}/slow", tmp_path / "f.bin", Pin(sha256=SHA), timeout=0.3)
    assert time.monotonic() - start < 1.8
    assert (tmp_path / "f.bin.part").read_bytes() == GOOD[:100]


def test_an_unreachable_host_is_one_line(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch("http://127.0.0.1:9/x", tmp_path / "f.bin", timeout=2)


# -- whole datasets -------------------------------------------------------------------------
@pytest.fixture
def catalogue(server, monkeypatch):
    """A fake catalogue on the local server: an archive with two pinned members, a plain
    pinned file, and an unpinned file."""
    a, b = b"user item\n1 2\n", b"genres\n"
    Handler.files["/set.zip"] = _zip({"set/a.txt": a, "set/b.txt": b, "set/other": b"x"})
    fake = {
        "zipped": Entry("zipped", (Resource(f"{server}/set.zip", "set.zip", members={
            "set/a.txt": ("a.txt", Pin(hashlib.sha256(a).hexdigest())),
            "set/b.txt": ("b.txt", Pin(hashlib.sha256(b).hexdigest()))}),)),
        "badmember": Entry("badmember", (Resource(f"{server}/set.zip", "set.zip", members={
            "set/a.txt": ("a.txt", Pin("0" * 64))}),)),
        "plain": Entry("plain", (Resource(f"{server}/good", "train.txt", Pin(SHA)),)),
        "unpinned": Entry("unpinned", (Resource(f"{server}/good", "train.txt"),)),
    }
    monkeypatch.setattr(dl, "CATALOGUE", fake)
    return fake


def test_an_archive_is_unpacked_checked_and_removed(catalogue, tmp_path):
    folder = dl.download("zipped", tmp_path / "z")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
    assert (folder / "a.txt").read_bytes() == b"user item\n1 2\n"
    Handler.log.clear()
    dl.download("zipped", tmp_path / "z")  # everything in place and matching: no request
    assert Handler.log == []


def test_a_bad_member_fails_and_leaves_neither_member_nor_archive(catalogue, tmp_path):
    with pytest.raises(DownloadError, match=r"set.zip!set/a.txt: checksum mismatch"):
        dl.download("badmember", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unpinned_file_needs_no_verify(catalogue, tmp_path):
    with pytest.raises(DownloadError, match="no checksum is pinned for train.txt.*--no-verify"):
        dl.download("unpinned", tmp_path)
    assert list(tmp_path.iterdir()) == []
    dl.download("unpinned", tmp_path, verify=False)
    assert (tmp_path / "train.txt").read_bytes() == GOOD


def test_the_default_folder_is_where_the_loaders_look(monkeypatch, tmp_path):
    from disentangle.data.sources import dataset_dir

    monkeypatch.setenv("DISENTANGLE_DATA", str(tmp_path))
    assert dl.default_dir("gowalla") == tmp_path / "gowalla"
    monkeypatch.delenv("DISENTANGLE_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    folder = dl.default_dir("gowalla")
    assert folder == tmp_path / "xdg" / "disentangle" / "gowalla"
    folder.mkdir(parents=True)
    for name in ("train.txt", "test.txt"):
        (folder / name).write_text("0 1 2\n")
    assert dataset_dir("gowalla") == folder


def test_the_catalogue_pins_every_file_but_ml_20m_and_no_hash_is_malformed():
    from disentangle.data import DATASETS

    assert set(CATALOGUE) == {"ml-100k", "ml-1m", "ml-20m", "ml-latest-small", "gowalla",
                              "yelp2018", "amazon-book"} and set(CATALOGUE) <= set(DATASETS)
    assert {n for n, e in CATALOGUE.items() if e.unverified} == {"ml-20m"}
    for entry in CATALOGUE.values():
        names = {f for r in entry.resources for f, _ in r.files()}
        assert any(set(layout) <= names for layout in DATASETS[entry.name].layouts), entry.name
        for r in entry.resources:
            for _, pin in r.files():
                assert pin.sha256 is None or len(bytes.fromhex(pin.sha256)) == 32
                assert pin.git_blob is None or len(bytes.fromhex(pin.git_blob)) == 20


def test_the_shared_copies_match_the_pins(shared):
    """Where a copy of a pinned file exists here, it hashes to its pin."""
    checked = 0
    for name, entry in CATALOGUE.items():
        for r in entry.resources:
            for f, pin in r.files():
                path = dl.Path(shared(".")) / name / f
                if path.is_file() and pin.verified:
                    assert pin.mismatch(path) is None, path
                    checked += 1
    assert checked >= 10


# -- the command line -----------------------------------------------------------------------
def test_cli_download_and_its_errors(catalogue, tmp_path):
    run = CliRunner().invoke
    result = run(main, ["download", "plain", "--dir", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "train.txt").read_bytes() == GOOD
    assert str(tmp_path / "p") in result.output
    result = run(main, ["download", "unpinned", "--dir", str(tmp_path / "u")])
    assert result.exit_code == 1
    assert result.output.startswith("error: unpinned: no checksum is pinned")
    assert len(result.output.strip().splitlines()) == 1
    result = run(main, ["download", "unpinned", "--dir", str(tmp_path / "u"), "--no-verify"])
    assert result.exit_code == 0, result.output
    result = run(main, ["download", "nope", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "known: zipped, badmember" in result.output


@pytest.mark.parametrize("name", ["ml-100k", "gowalla"])
def test_a_real_dataset_through_its_real_pins_loads(server, shared, monkeypatch, tmp_path, name):
    """The catalogue entry with its URLs moved to the local server, which serves the shared
    copies (as the publisher's zip for MovieLens): every pin matches and the loader reads
    the result."""
    import dataclasses

    from disentangle.data import load_dataset

    entry = CATALOGUE[name]
    resources = []
    for k, r in enumerate(entry.resources):
        url = f"/real/{name}/{k}"
        if r.members:
            Handler.files[url] = _zip({m: (shared(name) / f).read_bytes()
                                       for m, (f, _) in r.members.items()})
        else:
            Handler.files[url] = (shared(name) / r.name).read_bytes()
        resources.append(dataclasses.replace(r, url=server + url))
    monkeypatch.setitem(dl.CATALOGUE, name, dataclasses.replace(entry,
                                                                resources=tuple(resources)))
    folder = dl.download(name, tmp_path / name)
    assert not list(folder.glob("*.part")) and not list(folder.glob("*.zip"))
    expected = load_dataset(name, shared(name)).data
    got = load_dataset(name, folder).data
    assert (got.users == expected.users).all() and (got.items == expected.items).all()
