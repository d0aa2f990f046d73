"""Many readers at once: 16 threads, random ranges over every file of several stores, byte-exact."""
from __future__ import annotations

import os
import random
import threading

import pytest

import oracle
from conftest import need_fuse, shared_mount, store_path

pytestmark = need_fuse

STORES = ["dense_f32", "csr_gzip", "csc_lzf_int64", "real_pbmc68k_reduced_legacy", "fresh"]


@pytest.mark.parametrize("sid", STORES)
def test_concurrent_random_reads(sid):
    m = shared_mount(sid)
    tree = oracle.expected_tree(store_path(sid))
    paths = sorted(tree)
    errors: list[str] = []
    barrier = threading.Barrier(16)

    def worker(i):
        rng = random.Random(i * 7919 + len(paths))
        barrier.wait()
        try:
            for _ in range(150):
                rel = rng.choice(paths)
                want = tree[rel]
                off = rng.randrange(0, len(want) + 1)
                ln = rng.choice([1, 100, 4096, 131072, len(want) + 1])
                fd = os.open(m.mnt / rel, os.O_RDONLY)
                try:
                    got = os.pread(fd, ln, off)
                finally:
                    os.close(fd)
                if got != want[off:off + ln]:
                    errors.append(f"thread {i}: {rel} [{off}, +{ln}) differs")
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "reader threads hung"
    assert not errors, "\n".join(errors[:10])
    assert m.proc.poll() is None


def test_concurrent_whole_file_reads_same_file():
    """16 threads reading the same large file sequentially (shared chunk decode)."""
    m = shared_mount("real_pbmc68k_reduced_legacy")
    tree = oracle.expected_tree(store_path("real_pbmc68k_reduced_legacy"))
    rel = "X/dense.npy"
    want = tree[rel]
    results = [None] * 16

    def worker(i):
        with open(m.mnt / rel, "rb") as f:
            results[i] = f.read()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r == want for r in results)
