"""Loading speed and peak memory of a user's CSV file (``--dataset csv:PATH``). Prints a table
and writes JSON.

    flock /tmp/heavy.lock python benchmarks/loading.py --rows 2000000 --repeats 3 \\
        --out benchmarks/results/loading.json

A synthetic ``user,item,rating,timestamp`` file of each size is written once (seeded:
Zipf-like user and item popularity, half-star ratings, ten-digit timestamps; 2M rows make
about 41 MB). Each load runs in a fresh process, which reports its wall time and its peak
resident memory (``VmHWM``, Linux) both before loading (the imports) and after; the table gives rows per second and both peaks, as medians over ``--repeats``
runs. Every rating is kept (threshold 0, no user filter), so the whole file becomes
interactions.

``--source DIR`` loads with the ``disentangle`` package found in ``DIR`` instead (e.g. an
older commit unpacked with ``git archive COMMIT | tar -x -C DIR``), for a before/after
comparison on the same files and machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: The child reads its peak from /proc/self/status (VmHWM, reset by exec): ru_maxrss would
#: carry the parent's high-water mark across fork and exec.
_CHILD = r"""
import json, sys, time
def peak_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
from disentangle.data import LoadOptions, load_dataset
before = peak_mib()
start = time.perf_counter()
data = load_dataset("csv:" + sys.argv[1], None, LoadOptions(0.0, 1)).data
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "interactions": int(data.num_interactions),
                  "users": int(data.num_users), "items": int(data.num_items),
                  "imports_mib": before, "peak_mib": peak_mib()}))
"""


def write_synthetic(path: Path, rows: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """``rows`` lines of ``user,item,rating,timestamp`` after a header: users uniform (100
    rows each on average), items with popularity ``1 / (rank + 10)`` over ``rows / 50``
    items (few repeated pairs, as in a ratings file)."""
    rng = np.random.default_rng(seed)
    users, items = max(rows // 100, 10), max(rows // 50, 10)
    weight = 1 / (np.arange(items) + 10.0)
    weight /= weight.sum()
    with open(path, "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            u = rng.integers(0, users, n)
            i = rng.choice(items, n, p=weight)
            r = rng.integers(1, 11, n) / 2
            t = rng.integers(1_000_000_000, 1_600_000_000, n)
            f.write("".join(f"{a},{b},{c:g},{d}\n" for a, b, c, d in
                            zip(u.tolist(), i.tolist(), r.tolist(), t.tolist())))


def measure(path: Path, source: Path | None) -> dict:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = f"{source}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                          text=True, env=env, check=True, cwd=source or Path.cwd())
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", type=Path, help="load with the package in this folder")
    parser.add_argument("--dir", type=Path, help="where the synthetic files go (kept)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="loading-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        path = folder / f"synthetic-{rows}.csv"
        if not path.exists():
            write_synthetic(path, rows)
        runs = [measure(path, args.source) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("seconds", "imports_mib", "peak_mib")}
        results.append({"rows": rows, "file_mib": path.stat().st_size / 2 ** 20,
                        "rows_per_s": rows / med["seconds"], **med,
                        "interactions": runs[0]["interactions"], "users": runs[0]["users"],
                        "items": runs[0]["items"], "runs": runs})
    label = str(args.source) if args.source else "this checkout"
    print(f"loading csv:PATH with {label} (medians of {args.repeats} fresh processes)")
    print(f"{'rows':>10} {'file MiB':>9} {'seconds':>8} {'rows/s':>10} {'imports MiB':>12} "
          f"{'peak MiB':>9}")
    for r in results:
        print(f"{r['rows']:>10} {r['file_mib']:>9.1f} {r['seconds']:>8.2f} "
              f"{r['rows_per_s']:>10.0f} {r['imports_mib']:>12.0f} {r['peak_mib']:>9.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"source": label, "repeats": args.repeats,
                                        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
