"""Every bad input the CLI meets gives one ``error: ...`` line naming what and where, exit code 2
for bad input or usage and 1 for a failure at run time, and never a traceback.

The table below is the specification: each case builds its arguments (and the files they
name), runs them through click's test runner, and checks the message and the exit code.
"""
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disentangle.runs.checkpoint import load_checkpoint, save_checkpoint
from disentangle_cli.main import main

TINY = ["--set", "model.dim=4", "--quiet"]
FIT = ["fit", "--model", "macridvae", *TINY, "--epochs", "0"]


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_failure(result, code):
    """Exit ``code`` through ``sys.exit`` (no escaped exception), the last line the only
    ``error:`` line, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.output
    assert sum(line.startswith("error") for line in lines) == 1, result.output


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A finished one-epoch MacridVAE run, fitted from an empty working directory."""
    root = tmp_path_factory.mktemp("fitted")
    work, out = root / "cwd", root / "run"
    work.mkdir()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = invoke(["fit", "--model", "macridvae", *TINY, "--epochs", "1", "--out", out])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert not any(work.iterdir()), "fit wrote outside its run directory"
    return out


# -- files and run directories the cases point at -------------------------------------------
def csv_file(tmp, content, name="data.csv"):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return f"csv:{path}"


def dense(users=40, items=12, per_user=8, rating=None):
    r = "" if rating is None else f",{rating}"
    return "".join(f"u{u},i{(u + k) % items}{r}\n" for u in range(users) for k in range(per_user))


def run_copy(tmp, fitted):
    out = tmp / "copy"
    shutil.copytree(fitted, out)
    return out


def edit(path, old, new):
    path.write_text(path.read_text().replace(old, new))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def flip_last_byte(path):
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x55
    path.write_bytes(bytes(blob))


def resave_as(model_name):
    def go(path):
        tensors, meta = load_checkpoint(path)
        save_checkpoint(path, tensors, {**meta, "model": model_name})
    return go


def future_format(path):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(path), metadata={"disentangle": '{"format_version": 99}'})


def tampered(name, change):
    """Args of ``evaluate`` on a copy of the fitted run whose file ``name`` went through
    ``change``."""
    def build(tmp, fitted):
        out = run_copy(tmp, fitted)
        change(out / name)
        return ["evaluate", out]
    return build


def fit_csv(content, *extra, name="data.csv"):
    return lambda tmp, fitted: [*FIT, "--dataset", csv_file(tmp, content, name), *extra,
                                "--out", tmp / "out"]


def fit_with(*extra, model="macridvae", epochs=("--epochs", "0")):
    size = "model.dim=4" if model == "macridvae" else "model.factor_dim=4"
    return lambda tmp, fitted: ["fit", "--model", model, "--set", size, "--quiet", *epochs,
                                *extra, "--out", tmp / "out"]


def unreadable(tmp, fitted):
    path = tmp / "secret.csv"
    path.write_text(dense())
    path.chmod(0)
    return [*FIT, "--dataset", f"csv:{path}", "--out", tmp / "out"]


def nonempty_out(tmp, fitted):
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("x")
    return [*FIT, "--out", tmp / "out"]


def config_file(text):
    def build(tmp, fitted):
        (tmp / "c.yaml").write_text(text)
        return ["fit", "--config", tmp / "c.yaml", *TINY, "--out", tmp / "out"]
    return build


def heldout_users_without_targets():
    # 60 users over 10 shared items: half have 8 items, half 3 (too few for a target)
    text = "".join(f"u{u},i{(u + k) % 10}\n" for u in range(60) for k in range(8 if u % 2 else 3))
    return fit_csv(text, "--set", "data.min_user_interactions=1", "--set",
                   "data.heldout_users=12")


ROOT = True if os.name != "posix" else os.geteuid() == 0

# (id, build(tmp, fitted) -> args, message substring, exit code)
CASES = [
    # -- a user's own interaction file --------------------------------------------------------
    ("csv-missing", lambda t, f: [*FIT, "--dataset", f"csv:{t}/nope.csv", "--out", t / "o"],
     "nope.csv: no such file", 2),
    ("csv-folder", lambda t, f: [*FIT, "--dataset", f"csv:{t}", "--out", t / "o"],
     ": is a folder; expected a", 2),
    pytest.param("csv-unreadable", unreadable, "secret.csv: permission denied", 2,
                 marks=pytest.mark.skipif(ROOT, reason="root reads any file"),
                 id="csv-unreadable"),
    ("csv-no-path", lambda t, f: [*FIT, "--dataset", "csv:", "--out", t / "o"],
     "give a path after 'csv:'", 2),
    ("csv-empty", fit_csv(""), "data.csv: empty file", 2),
    ("csv-blank-lines", fit_csv("\n  \n\t\n"), "data.csv: empty file", 2),
    ("csv-binary", fit_csv(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
     "data.csv: line 3: binary data (a NUL byte)", 2),
    ("csv-not-utf8", fit_csv("u1,caf\u00e9\n".encode("latin-1")),
     "data.csv: line 1: not UTF-8 text (byte 0xe9)", 2),
    ("csv-bad-gzip", fit_csv("u,i\n", name="data.csv.gz"), "data.csv.gz: not a valid gzip", 2),
    ("csv-one-column", fit_csv("u1\nu2\n"), "line 1: one column with each of tab, comma", 2),
    ("csv-too-many-columns", fit_csv("u,i,5,100,x,y\n"),
     "expected 2 to 4 columns: user, item and optionally rating and timestamp", 2),
    ("csv-ragged-row", fit_csv("u1,i1\nu1,i2\n\nu2,i1,5\n"),
     "data.csv: line 4: 3 fields, expected 2 as on line 1", 2),
    ("csv-wrong-delimiter", fit_csv(dense(), "--delimiter", ";"),
     "data.csv: line 1: 1 field with delimiter semicolon", 2),
    ("csv-bad-delimiter-option", fit_csv(dense(), "--delimiter", "ab"),
     "delimiter 'ab': expected one character", 2),
    ("csv-rating-not-a-number", fit_csv("u1,i1,5\nu1,i2,4\nu2,i1,five\n"),
     "data.csv: line 3: rating 'five' is not a number", 2),
    ("csv-rating-nan", fit_csv("u1,i1,5\nu1,i2,NaN\n"),
     "data.csv: line 2: rating 'NaN' is not a finite number", 2),
    ("csv-rating-inf", fit_csv("user,item,rating\nu1,i1,inf\n"),
     "data.csv: line 2: rating 'inf' is not a finite number", 2),
    ("csv-timestamp-not-a-number", fit_csv("u1,i1,5,1e9\nu1,i2,4,2021-03-04\n"),
     "data.csv: line 2: timestamp '2021-03-04' is not a number", 2),
    ("csv-empty-user-id", fit_csv("u1,i1\n,i2\n"), "data.csv: line 2: empty user id", 2),
    ("csv-unclosed-quote", fit_csv('u1,i1\nu1,"i2\nu2,i3\n'),
     "data.csv: line 2: item id spans lines (a quote opened on this line is never closed)", 2),
    ("csv-only-header", fit_csv("userId,movieId,rating\n"), "only a header line", 2),
    ("csv-threshold-removes-all", fit_csv(dense(rating=2)),
     "no interactions left: none of the 320 ratings is >= 4 (data.rating_threshold", 2),
    ("csv-no-user-left", fit_csv(dense(per_user=3)),
     ("no interactions left: no user has 5 or more interactions (40 users; "
      "data.min_user_interactions)"), 2),
    ("csv-too-small-for-heldout", fit_csv(dense(users=2, per_user=6)),
     ("too small for the heldout protocol: 2 users after filtering, and "
      "data.heldout_users=0.1 holds out 0 validation and 0 test users"), 2),
    ("csv-too-small-for-ratio", fit_csv(dense(users=20, per_user=5), "--protocol", "ratio"),
     ("too small for the ratio protocol: it leaves 80 training interactions, 0 validation "
      "and 20 test users"), 2),
    ("csv-duplicates-merged", fit_csv(dense() + dense(users=5)),
     "warning: ", 0),
    ("csv-rating-threshold-option", fit_csv(dense(rating=2), "--rating-threshold", "2"),
     "test metrics (heldout protocol, 4 users", 0),
    ("heldout-user-without-target", heldout_users_without_targets(),
     "test user(s) without target items count as 0 in every mean", 0),
    # -- names, config keys and values --------------------------------------------------------
    ("unknown-model", lambda t, f: ["fit", "--model", "nosuch", "--out", t / "o"],
     "error: unknown model 'nosuch'; known: macridvae", 2),
    ("no-model", lambda t, f: ["fit", "--out", t / "o"], "no model given", 2),
    ("unknown-dataset", fit_with("--dataset", "nosuch"),
     "unknown dataset 'nosuch'; known: ml-latest-small", 2),
    ("unknown-config-key", fit_with("--set", "model.nosuch=1"),
     "unknown config key model.nosuch; known: anchor, assign_tau, batch_size, beta", 2),
    ("unknown-config-section", fit_with("--set", "optim.lr=1"),
     "unknown config section 'optim'", 2),
    ("set-without-value", fit_with("--set", "tau"), "--set 'tau': expected section.key=value", 2),
    ("wrong-type", fit_with("--set", "model.num_factors=many"),
     "model.num_factors='many': expected int", 2),
    ("unparsable-value", fit_with("--set", "model.tau=["), "model.tau='[': not a valid value", 2),
    ("K-below-1", fit_with("--set", "model.num_factors=0"),
     "error: model.num_factors=0 is out of range: expected an integer >= 1", 2),
    ("tau-zero", fit_with("--set", "model.tau=0"),
     "model.tau=0.0 is out of range: expected a float > 0", 2),
    ("tau-negative-disengcn", fit_with("--set", "model.tau=-1", model="disengcn"),
     "model.tau=-1.0 is out of range: expected a float > 0", 2),
    ("dropout-one", fit_with("--set", "model.dropout=1"),
     "model.dropout=1.0 is out of range: expected a float in [0, 1)", 2),
    ("dropout-negative", fit_with("--set", "model.dropout=-0.1"),
     "model.dropout=-0.1 is out of range", 2),
    ("T-below-1", fit_with("--set", "model.iterations=0", model="disengcn"),
     "model.iterations=0 is out of range: expected an integer >= 1", 2),
    ("negative-epochs", fit_with("--epochs", "-3"),
     "Invalid value for '--epochs': -3 is not in the range x>=0", 2),
    ("negative-epochs-set", fit_with("--set", "train.epochs=-3", epochs=()),
     "train.epochs=-3 is out of range: expected an integer >= 0", 2),
    ("bad-heldout-users", fit_with("--set", "data.heldout_users=0"),
     "data.heldout_users=0.0 is out of range", 2),
    ("config-file-missing", lambda t, f: ["fit", "--config", t / "nope.yaml", "--out", t / "o"],
     "nope.yaml: No such file or directory", 2),
    ("config-file-not-yaml", config_file("model: [macridvae\n"), "c.yaml: not valid YAML", 2),
    ("config-file-not-a-mapping", config_file("- macridvae\n"),
     "c.yaml: expected a mapping of sections", 2),
    ("model-cannot-do-protocol", fit_with("--protocol", "heldout", model="disengcn"),
     "model 'disengcn' cannot score users unseen in training; use data.protocol=ratio", 2),
    pytest.param("device-without-cuda", fit_with("--device", "cuda"),
                 "--device cuda: CUDA is not available on this machine", 2,
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present"),
                 id="device-without-cuda"),
    ("unknown-option", lambda t, f: ["fit", "--epoch", "3"],
     "No such option '--epoch'", 2),
    ("unknown-command", lambda t, f: ["train"], "No such command 'train'", 2),
    ("out-not-empty", nonempty_out, "out: exists and is not empty (use --resume", 2),
    # -- run directories ----------------------------------------------------------------------
    ("resume-missing-dir", lambda t, f: ["fit", "--resume", t / "nope"],
     "Invalid value for '--resume': Directory", 2),
    ("resume-not-a-run", lambda t, f: ["fit", "--resume", t],
     "not a run directory (no config.yaml)", 2),
    ("resume-with-new-config", lambda t, f: ["fit", "--resume", run_copy(t, f), "--set",
                                             "model.tau=0.5", "--model", "macridvae"],
     "--resume continues the run with its own config; drop --model, --set", 2),
    ("resume-truncated-checkpoint", lambda t, f: (truncate(run_copy(t, f) / "last.safetensors"),
                                                  ["fit", "--resume", t / "copy"])[1],
     "last.safetensors: not a disentangle checkpoint (truncated or not safetensors)", 2),
    ("resume-foreign-model", lambda t, f: (resave_as("disengcn")(run_copy(t, f) /
                                                                 "last.safetensors"),
                                           ["fit", "--resume", t / "copy"])[1],
     "last.safetensors: holds a 'disengcn' model, the config names 'macridvae'", 2),
    ("recommend-unknown-user", lambda t, f: ["recommend", f, "--user", "nobody"],
     "unknown user id 'nobody'", 2),
    ("evaluate-not-a-run", lambda t, f: ["evaluate", t], "not a run directory (no config.yaml)",
     2),
    ("evaluate-other-version", tampered("config.yaml", lambda p: edit(p, "version: 0.1.0",
                                                                      "version: 0.0.7")),
     "written by disentangle 0.0.7, this is 0.1.0; re-run fit with this version", 2),
    ("evaluate-config-of-other-model", tampered("config.yaml", lambda p: edit(
        p, "name: macridvae", "name: disengcn")), "config.yaml: unknown config key model.", 2),
    ("evaluate-checkpoint-of-other-model", tampered("best.safetensors", resave_as("disengcn")),
     "best.safetensors: holds a 'disengcn' model, the config names 'macridvae'", 2),
    ("evaluate-checkpoint-other-format", tampered("best.safetensors", future_format),
     "best.safetensors: checkpoint format 99; this version of disentangle reads format 1", 2),
    ("evaluate-truncated-checkpoint", tampered("best.safetensors", truncate),
     "best.safetensors: not a disentangle checkpoint (truncated or not safetensors)", 2),
    ("evaluate-tampered-checkpoint", tampered("best.safetensors", flip_last_byte),
     "best.safetensors: checksum mismatch (the checkpoint was modified)", 2),
    ("evaluate-tampered-split", tampered("split.safetensors", flip_last_byte),
     "split.safetensors: checksum mismatch", 2),
    ("evaluate-tampered-ids", tampered("data.json", lambda p: edit(p, '"', "'")),
     "data.json: checksum mismatch (the file was modified)", 2),
    ("evaluate-missing-checkpoint", tampered("best.safetensors", Path.unlink),
     "no best.safetensors (the run stopped before its first evaluation", 2),
    # -- failures at run time -----------------------------------------------------------------
    ("non-finite-loss", lambda t, f: ["fit", "--model", "macridvae", *TINY, "--epochs", "1",
                                      "--set", "model.tau=1e-300", "--out", t / "o"],
     "loss is nan at epoch 1, step 0; training stopped", 2),
]


@pytest.mark.parametrize("name, build, message, code",
                         [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_gives_one_line_and_an_exit_code(tmp_path, fitted, name, build, message, code):
    result = invoke(build(tmp_path, fitted))
    assert message in result.output, result.output
    if code:
        assert_one_line_failure(result, code)
    else:
        assert result.exit_code == 0 and result.exception is None, result.output


def test_debug_shows_the_traceback_instead(tmp_path):
    result = invoke(["--debug", "fit", "--model", "macridvae", "--set", "model.tau=0"])
    assert result.exit_code == 1 and type(result.exception).__name__ == "ConfigError"


def test_duplicates_are_merged_with_a_count(tmp_path):
    result = invoke(fit_csv(dense() + dense(users=5))(tmp_path, None))
    assert result.exit_code == 0, result.output
    assert f"warning: {tmp_path / 'data.csv'}: 40 repeated (user, item) rows merged" \
        in result.output


# -- never a traceback, whatever the file holds --------------------------------------------
FIELD = st.one_of(
    st.sampled_from(["", " ", "u1", "u2", "u3", "i1", "i2", "i3", "5", "3.5", "1e9", "NaN",
                     "inf", "-inf", "nan", '"', '"a,b"', "'", "\\", "#", "user", "item",
                     "rating", "timestamp", "\u00e9", "\u2028", "1_0", "0x10"]),
    st.text(max_size=6))
ROW = st.lists(FIELD, min_size=0, max_size=6)
DELIM = st.sampled_from([",", "\t", ";", "|", " ", ":", ", "])
NEWLINE = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def interaction_files(draw):
    kind = draw(st.sampled_from(["rows", "dense", "dense", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "dense":  # mostly valid, with a little damage, so some runs get through
        n_users, n_items = draw(st.integers(1, 30)), draw(st.integers(1, 12))
        rows = [[f"u{u}", f"i{(u * 7 + k) % n_items}", draw(st.sampled_from(["5", "4", "1"]))]
                for u in range(n_users) for k in range(draw(st.integers(1, 9)))]
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            rows.insert(draw(st.integers(0, len(rows))), draw(ROW))
    else:
        rows = draw(st.lists(ROW, max_size=12))
    delimiter = draw(DELIM)
    text = draw(NEWLINE).join(delimiter.join(r) for r in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(content=interaction_files(),
       extra=st.sampled_from([[], ["--set", "data.min_user_interactions=1"],
                              ["--protocol", "ratio", "--set", "data.min_user_interactions=1"],
                              ["--delimiter", "tab"], ["--rating-threshold", "1"]]))
def test_random_malformed_files_never_give_a_traceback(tmp_path, content, extra):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    (work / "data.csv").write_bytes(content)
    result = invoke(["fit", "--model", "macridvae", "--dataset", f"csv:{work / 'data.csv'}",
                     *TINY, "--epochs", "1", *extra, "--out", work / "out"])
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert result.exception is None and "test metrics" in result.output, result.output
    else:
        assert_one_line_failure(result, result.exit_code)
        assert result.exit_code in (1, 2)


# -- safe by construction ------------------------------------------------------------------
class RunsCode:
    """Unpickling this creates the file ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("command, target", [
    (["evaluate"], "best.safetensors"),
    (["recommend", "--user", "1"], "best.safetensors"),
    (["fit", "--resume"], "last.safetensors"),
    (["evaluate"], "split.safetensors"),
])
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_checkpoint_crafted_to_run_code_is_refused_and_never_run(tmp_path, fitted, command,
                                                                   target, writer):
    marker = tmp_path / "PWNED"
    payload = {"model.items": RunsCode(marker)}
    pickle.loads(pickle.dumps(payload))  # the payload is live: unpickling it runs the code
    assert marker.exists()
    marker.unlink()
    run = run_copy(tmp_path, fitted)
    if writer == "pickle":
        (run / target).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, run / target)
    args = [*command[:1], run, *command[1:]] if command[0] != "fit" else [*command, run]
    result = invoke(args)
    assert_one_line_failure(result, 2)
    assert f"{target}: not a disentangle checkpoint" in result.output
    assert not marker.exists(), "loading the checkpoint ran its code"


UNSAFE = [r"torch\.load\((?![^)]*weights_only=True)", r"\bpickle\.loads?\(",
          r"\byaml\.(load|unsafe_load|full_load)\(", r"allow_pickle=True",
          r"(?<![\w.`])eval\(", r"(?<![\w.`])exec\("]


def test_no_source_file_unpickles_or_parses_yaml_unsafely():
    root = Path(__file__).resolve().parents[2]
    offenders = [f"{path.relative_to(root)}: {m[0]}"
                 for path in [*(root / "disentangle").rglob("*.py"), *(root / "cli").rglob("*.py")]
                 for pattern in UNSAFE for m in re.finditer(pattern, path.read_text())]
    assert not offenders


def test_default_run_directory_is_named_by_the_file_never_by_its_path(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "my data.csv").write_text(dense())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke([*FIT, "--dataset", "csv:../elsewhere/my data.csv"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in work.iterdir()] == ["runs"]
    (run,) = (work / "runs").iterdir()
    assert run.name.startswith("macridvae-my_data.csv-")
    assert sorted(p.name for p in outside.iterdir()) == ["my data.csv"]
