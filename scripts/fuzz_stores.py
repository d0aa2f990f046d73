#!/usr/bin/env python3
"""Damage copies of the real fixture stores and read every file of each through `annfs`.

Each damaged store is made from one fixture (tests/fixtures/*.h5ad, tests/fixtures/zarr/*.zarr)
by a seeded RNG: random byte flips, zeroed ranges and truncations, and targeted damage (HDF5
superblock, object headers, B-tree / chunk index nodes, global heap collections; zarr JSON
metadata, chunk files, shard indexes); or, for a share of the cases (`--semantic`), damage that
keeps the file valid HDF5 (the metadata valid JSON) and lies about the AnnData in it
(scripts/fuzz_semantic.py). Then every file of its virtual tree is read (the code path
of a mount, without FUSE) under a deadline: by default in one process per store with
`target/release/examples/fuzz_read` (`annfs cat`'s open and read calls, for every file), or with
`--cat` as `annfs ls -r STORE` then one `annfs cat STORE PATH` per file.

Outcomes per store (the worst over its commands): ok, error (non-zero exit with a message),
PANIC ("panicked" on stderr), ABORT (killed by a signal), HANG (the store's reads missed the
deadline). At most `--max-bytes` of each file are read (a damaged shape may make a legitimately
huge file). Bad cases are saved under `--findings` with their seed, so
`--seed S --only I` reproduces one.

Usage: cargo build --release --examples
       .venv/bin/python scripts/fuzz_stores.py -n 2000 --seed 1 --jobs 2
Prints `fuzz: N stores, P panics, A aborts, H hangs` and exits 1 if any of the last three is
non-zero.
"""

import argparse
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_mutations as mut  # noqa: E402
import fuzz_semantic as semantic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RANK = {"ok": 0, "error": 1, "PANIC": 2, "ABORT": 3, "HANG": 4}


def fixtures(root=ROOT):
    """The real stores to damage: every h5ad and zarr fixture (not the damaged ones)."""
    fx = root / "tests" / "fixtures"
    return sorted(fx.glob("*.h5ad")) + sorted((fx / "zarr").glob("*.zarr"))


def run(cmd, deadline, max_bytes, keep=False, env=None):
    """Runs `cmd` until it exits, `deadline` (monotonic) passes or it printed `max_bytes`.

    Returns (outcome, detail, stdout): outcome in RANK, detail a short text for the report,
    stdout the output if `keep`."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "RUST_BACKTRACE": "0", "RUST_LOG": "off", **(env or {})})
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    sel.register(p.stderr, selectors.EVENT_READ)
    out_n, err, out = 0, bytearray(), bytearray()
    capped = False
    open_streams = 2
    while open_streams:
        left = deadline - time.monotonic()
        if left <= 0:
            p.kill()
            p.wait()
            return "HANG", f"no exit within the deadline: {' '.join(map(str, cmd[1:]))}", out
        for key, _ in sel.select(timeout=min(left, 1.0)):
            data = os.read(key.fd, 1 << 20)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
            elif key.fileobj is p.stdout:
                out_n += len(data)
                if keep:
                    out += data
                if out_n >= max_bytes:
                    capped = True
                    open_streams = 0
                    break
            elif len(err) < 1 << 16:
                err += data
        if capped:
            p.kill()
    try:
        rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return "HANG", f"no exit after closing its output: {' '.join(map(str, cmd[1:]))}", out
    finally:
        p.stdout.close()
        p.stderr.close()
    text = err.decode("utf-8", "replace")
    if "panicked" in text:
        return "PANIC", text[-2000:], out
    if capped:
        return "ok", f"stopped after {out_n} bytes", out
    if rc < 0:
        # Killed by a signal: SIGABRT/SIGSEGV/SIGBUS/... or the OOM killer's SIGKILL.
        return "ABORT", f"killed by {signal.Signals(-rc).name}", out
    if rc != 0:
        # A clean error says why (on stderr, or per file on stdout for the reader); dying
        # silently with a status is not clean.
        said = text.strip() or (b"error " in out and f"exit {rc}")
        return ("error" if said else "ABORT"), text.strip()[-300:] or f"exit {rc}, no message", out
    return "ok", "", out


def check_store(args, store, env, rng):
    """Reads every file of `store` within `args.timeout` seconds; (outcome, detail, files)."""
    deadline = time.monotonic() + args.timeout
    if not args.cat:
        cmd = [args.reader, str(store), str(args.max_bytes)]
        outcome, detail, out = run(cmd, deadline, 1 << 26, keep=True, env=env)
        lines = out.decode("utf-8", "replace").splitlines()
        if outcome == "HANG":
            done = [ln.split(" ", 2)[1] for ln in lines if ln.startswith(("ok ", "error "))]
            detail += f" (after {len(done)} files, last {done[-1] if done else 'none'})"
        elif outcome == "error" and lines:
            # Exit 2: some files failed cleanly; say which.
            errs = [ln for ln in lines if ln.startswith("error ")]
            detail = f"{len(errs)} files failed: {errs[0][:200] if errs else detail}"
        return outcome, detail, sum(ln.startswith(("ok ", "error ")) for ln in lines)
    worst, detail, listing = run([args.annfs, "ls", "-r", str(store)], deadline, 1 << 26,
                                 keep=True, env=env)
    if worst != "ok":
        return worst, detail, 0
    paths = [p for p in listing.decode("utf-8", "replace").splitlines() if p]
    if args.max_files is not None and len(paths) > args.max_files:
        paths = rng.sample(paths, args.max_files)
    for path in paths:
        outcome, d, _ = run([args.annfs, "cat", str(store), path], deadline, args.max_bytes,
                            env=env)
        if RANK[outcome] > RANK[worst]:
            worst, detail = outcome, f"{path}: {d}"
        if RANK[worst] >= RANK["PANIC"]:
            break
    return worst, detail, len(paths)


def one_case(args, seed, index, fxs, workdir):
    """Makes damaged store `index` of run `seed`, checks it and returns its record."""
    rng = random.Random(f"{seed}:{index}")
    src = fxs[rng.randrange(len(fxs))]
    dst = Path(workdir) / f"case{index}{src.suffix}"
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    # Its own RNG: runs from before semantic damage existed replay with --semantic 0.
    sem = random.Random(f"{seed}:{index}:semantic")
    semantic_case = sem.random() < args.semantic
    if src.is_dir():
        shutil.copytree(src, dst)
        done = semantic.damage_zarr_semantic(dst, sem) if semantic_case else mut.damage_zarr(dst, rng)
    else:
        shutil.copyfile(src, dst)
        done = semantic.damage_h5_semantic(dst, sem) if semantic_case else mut.damage_h5(dst, rng)
    t = time.monotonic()
    # Sidecar files (sizes of big text views) go to the case's own directory.
    outcome, detail, nfiles = check_store(args, dst, {"XDG_CACHE_HOME": str(workdir)}, rng)
    rec = {"seed": seed, "index": index, "fixture": str(src.relative_to(ROOT)), "mutations": done,
           "outcome": outcome, "detail": detail, "files": nfiles,
           "seconds": round(time.monotonic() - t, 2)}
    if RANK[outcome] >= RANK["PANIC"]:
        save = Path(args.findings) / f"{outcome.lower()}-seed{seed}-case{index}-{src.name}"
        if save.exists():
            shutil.rmtree(save)
        save.mkdir(parents=True)
        (shutil.copytree if dst.is_dir() else shutil.copyfile)(dst, save / src.name)
        (save / "case.json").write_text(json.dumps(rec, indent=1) + "\n")
    if dst.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
    else:
        dst.unlink(missing_ok=True)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="damaged stores to make (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", type=int, help="run only case INDEX of this seed")
    ap.add_argument("--jobs", type=int, default=2, help="stores checked in parallel")
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="seconds per store for all its reads (default 20)")
    ap.add_argument("--max-bytes", type=int, default=32 << 20,
                    help="read at most this much of each file (default 32 MiB)")
    ap.add_argument("--cat", action="store_true",
                    help="use `annfs ls -r` + one `annfs cat` per file (slower)")
    ap.add_argument("--max-files", type=int, help="with --cat: read at most this many files")
    ap.add_argument("--annfs", default=str(ROOT / "target" / "release" / "annfs"))
    ap.add_argument("--reader", default=str(ROOT / "target" / "release" / "examples" / "fuzz_read"))
    ap.add_argument("--findings", default=str(ROOT / "fuzz-findings"))
    ap.add_argument("--json", help="write every record to this file")
    ap.add_argument("--fixture", help="damage only the fixtures whose file name contains this")
    ap.add_argument("--semantic", type=float, default=0.3,
                    help="fraction of cases damaged semantically (valid HDF5 or JSON, lying AnnData: "
                         "scripts/fuzz_semantic.py) instead of byte by byte (default 0.3; 0 replays "
                         "runs from before it existed)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    fxs = [f for f in fixtures() if args.fixture is None or args.fixture in f.name]
    if not fxs:
        ap.error(f"no fixture name contains {args.fixture!r}")
    cases = [args.only] if args.only is not None else list(range(args.n))
    counts = {k: 0 for k in RANK}
    records = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="annfs-fuzz-") as tmp:
        def work(i):
            d = Path(tmp) / f"w{i % max(1, args.jobs)}-{i}"
            d.mkdir()
            try:
                return one_case(args, args.seed, i, fxs, d)
            finally:
                shutil.rmtree(d, ignore_errors=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for rec in pool.map(work, cases):
                counts[rec["outcome"]] += 1
                records.append(rec)
                bad = RANK[rec["outcome"]] >= RANK["PANIC"]
                if bad or args.verbose:
                    print(f"case {rec['index']}: {rec['outcome']} {rec['fixture']} "
                          f"{rec['mutations']} {rec['detail'][:300]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    secs = time.monotonic() - t0
    print(f"fuzz: {len(records)} stores, {counts['PANIC']} panics, {counts['ABORT']} aborts, "
          f"{counts['HANG']} hangs ({counts['ok']} read fully, {counts['error']} clean errors; "
          f"seed {args.seed}, {secs:.0f} s)")
    return 1 if counts["PANIC"] + counts["ABORT"] + counts["HANG"] else 0


if __name__ == "__main__":
    sys.exit(main())
