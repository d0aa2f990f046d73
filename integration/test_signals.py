"""Unmount on SIGTERM / SIGINT (exit 0); after SIGKILL the mount goes away (AutoUnmount), no dead endpoint."""
from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import Mount, is_mounted, need_fuse, store_path

pytestmark = need_fuse


def _wait_unmounted(mnt, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_mounted(mnt):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_unmount(sig, tmp_mnt):
    m = Mount(store_path("csr_gzip"), tmp_mnt).start()
    assert (tmp_mnt / "obs.tsv").read_bytes()
    m.proc.send_signal(sig)
    rc = m.proc.wait(15)
    assert rc == 0, f"exit status {rc} after {sig.name}:\n{m.stderr()}"
    assert not is_mounted(tmp_mnt), "still mounted after the daemon exited"
    assert os.listdir(tmp_mnt) == []


def test_clean_unmount_with_open_file(tmp_mnt):
    """An open file descriptor must not make SIGTERM hang or fail."""
    m = Mount(store_path("dense_f32"), tmp_mnt).start()
    f = open(tmp_mnt / "X/dense.npy", "rb")
    f.read(100)
    try:
        m.proc.send_signal(signal.SIGTERM)
        rc = m.proc.wait(20)
    finally:
        f.close()
    assert rc == 0, m.stderr()
    assert _wait_unmounted(tmp_mnt)


def test_sigkill_leaves_no_dead_mount(tmp_mnt):
    m = Mount(store_path("csr_gzip"), tmp_mnt).start()
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(10)
    assert _wait_unmounted(tmp_mnt, 10), "mount still present 10 s after SIGKILL"
    assert os.listdir(tmp_mnt) == []  # no "Transport endpoint is not connected"


def test_remount_same_point(tmp_mnt):
    for _ in range(2):
        m = Mount(store_path("scanpy_write"), tmp_mnt).start()
        assert (tmp_mnt / "README.txt").exists()
        assert m.stop() == 0
        assert not is_mounted(tmp_mnt)
