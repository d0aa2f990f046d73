"""Shared cluster mounts (issue 6): the mount(8) helper and fstab lines, multi-user access, systemd units and
readiness, daemon signals and log reopening, source-change safety, many readers from several users.

Most tests need root (mount(8), runuser, /sbin/mount.fuse.annfs); they skip otherwise.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ANNFS_BIN, REPO, Mount, force_unmount, is_mounted, need_fuse, run_annfs, store_path

IS_ROOT = os.geteuid() == 0
need_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mount(8), runuser, /sbin helper)")
pytestmark = [need_fuse]

HELPER = Path("/sbin/mount.fuse.annfs")
STORE = "csr_gzip"
OTHER_USERS = ["nobody", "daemon"]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------

def expected(store: Path, vpath: str) -> bytes:
    """The bytes of a virtual file, through `annfs cat` (same code path as a mount)."""
    r = run_annfs("cat", store, vpath)
    assert r.returncode == 0, r.stderr
    return r.stdout


def daemon_pids(mnt: Path) -> list[int]:
    """annfs processes (any argv[0] form) serving `mnt`."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).decode(errors="replace") in ("annfs", "mount.fuse.annfs") \
                and str(mnt).encode() in argv:
            pids.append(int(d.name))
    return pids


def wait_for(cond, timeout=10.0, step=0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


@pytest.fixture
def shared_mnt():
    """A mount point every user can reach (pytest's tmp dirs are 0700), cleaned up whatever happens."""
    d = Path(tempfile.mkdtemp(prefix="annfs-cluster-", dir="/tmp"))
    os.chmod(d, 0o755)
    mnt = d / "mnt"
    mnt.mkdir()
    os.chmod(mnt, 0o755)
    yield mnt
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        force_unmount(mnt)
    for pid in daemon_pids(mnt):  # only daemons serving this test's mount point
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def helper_installed():
    """/sbin/mount.fuse.annfs -> the binary under test for this module; the previous state restored after."""
    if not IS_ROOT:
        pytest.skip("installing /sbin/mount.fuse.annfs needs root")
    previous = os.readlink(HELPER) if HELPER.is_symlink() else None
    if HELPER.exists() and previous is None:
        pytest.skip(f"{HELPER} is a regular file; not replacing it")
    if previous is not None:
        HELPER.unlink()
    os.symlink(ANNFS_BIN.resolve(), HELPER)
    yield HELPER
    HELPER.unlink()
    if previous is not None:
        os.symlink(previous, HELPER)


def umount(mnt: Path) -> None:
    pids = daemon_pids(mnt)
    r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)
    assert wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids)), "daemon still running after umount"


# ----------------------------------------------------------------------------------------------------------------
# mount(8) helper and fstab
# ----------------------------------------------------------------------------------------------------------------

@need_root
def test_mount_t_fuse_annfs(helper_installed, shared_mnt):
    store = store_path(STORE)
    opts = "ro,allow_other,cache_size=64M,nofail,_netdev,noatime,nodev,nosuid,x-systemd.automount,defaults,user"
    # capture_output: returns only if the daemon let go of the helper's stdout/stderr.
    r = subprocess.run(["mount", "-t", "fuse.annfs", str(store), str(shared_mnt), "-o", opts],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert is_mounted(shared_mnt), "mount returned before the mount was live"
    assert (shared_mnt / "obs.tsv").read_bytes() == expected(store, "obs.tsv")
    line = next(l for l in Path("/proc/self/mounts").read_text().splitlines() if f" {shared_mnt} " in l)
    assert " fuse.annfs ro," in line and "allow_other" in line
    umount(shared_mnt)


@need_root
def test_fstab_line(helper_installed, shared_mnt, tmp_path):
    store = store_path(STORE)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# annfs test\n{store} {shared_mnt} fuse.annfs "
                     f"ro,allow_other,cache_size=64M,nofail,x-systemd.requires=network-online.target 0 0\n")
    r = subprocess.run(["mount", "-T", str(fstab), str(shared_mnt)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (shared_mnt / "var.tsv").read_bytes() == expected(store, "var.tsv")
    umount(shared_mnt)


def test_mount_fuse3_argv_form(shared_mnt):
    """Without /sbin/mount.fuse.annfs, mount.fuse3 runs `annfs STORE MNT -o OPTS`: it daemonizes once mounted."""
    store = store_path(STORE)
    r = run_annfs(store, shared_mnt, "-o", "ro,noatime,nosuid,nodev,cache_size=32M", timeout=60)
    assert r.returncode == 0, r.stderr
    assert is_mounted(shared_mnt)
    assert (shared_mnt / "X" / "csr" / "indptr.npy").read_bytes() == expected(store, "X/csr/indptr.npy")
    pids = daemon_pids(shared_mnt)
    assert len(pids) == 1
    assert run_annfs("umount", shared_mnt).returncode == 0
    assert wait_for(lambda: not Path(f"/proc/{pids[0]}").exists())
    assert not is_mounted(shared_mnt)


@need_root
@pytest.mark.parametrize("case", ["missing", "not_hdf5", "bad_option", "bad_mountpoint"])
def test_helper_error_path(helper_installed, shared_mnt, tmp_path, case):
    store, mnt, opts = store_path(STORE), shared_mnt, "ro,allow_other"
    want = {"missing": "cannot open", "not_hdf5": "not a readable store", "bad_option": "unknown mount option",
            "bad_mountpoint": "mount point"}[case]
    if case == "missing":
        store = tmp_path / "nope.h5ad"
    elif case == "not_hdf5":
        store = tmp_path / "text.h5ad"
        store.write_text("not an HDF5 file\n")
    elif case == "bad_option":
        opts += ",frobnicate=3"
    else:
        mnt = tmp_path / "no-such-dir"
    r = subprocess.run(["mount", "-t", "fuse.annfs", str(store), str(mnt), "-o", opts],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert want in r.stderr, r.stderr
    assert not is_mounted(shared_mnt)
    assert daemon_pids(mnt) == []


@need_root
def test_helper_fake_mount(helper_installed, shared_mnt):
    r = subprocess.run(["mount", "-f", "-t", "fuse.annfs", str(store_path(STORE)), str(shared_mnt), "-o", "ro"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(shared_mnt)


def test_install_helper(tmp_path):
    sbin, bin_ = tmp_path / "sbin", tmp_path / "bin"
    sbin.mkdir(), bin_.mkdir()
    r = run_annfs("install-helper", "--sbin", sbin, "--bin", bin_)
    assert r.returncode == 0, r.stderr
    for link in (sbin / "mount.fuse.annfs", bin_ / "annfs"):
        assert link.is_symlink() and link.resolve() == ANNFS_BIN.resolve()
    assert run_annfs("install-helper", "--sbin", sbin, "--bin", bin_).returncode == 0  # idempotent
    assert run_annfs("install-helper", "--sbin", sbin, "--bin", bin_, "--uninstall").returncode == 0
    assert list(sbin.iterdir()) == [] and list(bin_.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# multi-user access
# ----------------------------------------------------------------------------------------------------------------

def as_user(user: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, timeout=60, **kw)


need_runuser = pytest.mark.skipif(not IS_ROOT or shutil.which("runuser") is None, reason="needs root and runuser")


@need_runuser
def test_allow_other_lets_other_users_read(shared_mnt):
    store = store_path(STORE)
    with Mount(store, shared_mnt, "--allow-other"):
        r = as_user("nobody", "cat", str(shared_mnt / "obs.tsv"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected(store, "obs.tsv")


@need_runuser
def test_without_allow_other_other_users_cannot(shared_mnt):
    with Mount(store_path(STORE), shared_mnt):
        r = as_user("nobody", "cat", str(shared_mnt / "obs.tsv"))
        assert r.returncode != 0
        assert b"Permission denied" in r.stderr
        assert (shared_mnt / "obs.tsv").read_bytes()  # the owner (root) still reads


@need_runuser
def test_uid_gid_umask_in_stat(shared_mnt):
    with Mount(store_path(STORE), shared_mnt, "-o", "allow_other,uid=nobody,gid=65534,umask=027"):
        st = os.stat(shared_mnt / "obs.tsv")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o440)
        st = os.stat(shared_mnt / "X")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o550)
        assert as_user("nobody", "head", "-c", "10", str(shared_mnt / "obs.tsv")).returncode == 0
        # default_permissions: the kernel enforces the modes; `daemon` is neither owner nor in the group.
        r = as_user("daemon", "head", "-c", "10", str(shared_mnt / "obs.tsv"))
        assert r.returncode != 0 and b"Permission denied" in r.stderr


@need_runuser
def test_file_and_dir_modes(shared_mnt):
    with Mount(store_path(STORE), shared_mnt, "--allow-other", "--file-mode", "0640", "--dir-mode", "0751",
               "--umask", "0"):
        assert os.stat(shared_mnt / "obs.tsv").st_mode & 0o7777 == 0o440  # write bits dropped: read-only
        assert os.stat(shared_mnt / "obs").st_mode & 0o7777 == 0o551
        assert as_user("nobody", "cat", str(shared_mnt / "obs.tsv")).returncode != 0


@need_runuser
def test_allow_other_as_non_root_needs_fuse_conf(shared_mnt):
    conf = Path("/etc/fuse.conf")
    if conf.exists() and any(l.strip() == "user_allow_other" for l in conf.read_text().splitlines()):
        pytest.skip("/etc/fuse.conf has user_allow_other")
    os.chown(shared_mnt, 65534, 65534)
    # `nobody` may not be able to reach the checkout (a clone under a 0700 mktemp dir): run a copy
    # of the binary and the store from a world-readable directory.
    pub = Path(tempfile.mkdtemp(prefix="annfs-pub-"))
    try:
        pub.chmod(0o755)
        binary, store = pub / "annfs", pub / f"{STORE}.h5ad"
        shutil.copy2(ANNFS_BIN, binary)
        shutil.copy2(store_path(STORE), store)
        binary.chmod(0o755)
        store.chmod(0o644)
        r = as_user("nobody", str(binary), "mount", str(store), str(shared_mnt), "--allow-other")
    finally:
        shutil.rmtree(pub, ignore_errors=True)
    assert r.returncode != 0
    assert b"user_allow_other" in r.stderr and b"/etc/fuse.conf" in r.stderr, r.stderr
    assert not is_mounted(shared_mnt)


# ----------------------------------------------------------------------------------------------------------------
# systemd
# ----------------------------------------------------------------------------------------------------------------

def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (scripts/setup.sh installs Debian's systemd package)")
    for f in (REPO / "systemd").iterdir():
        if f.suffix in (".service", ".mount", ".automount"):
            (tmp_path / f.name).write_text(f.read_text().replace("/usr/local/bin/annfs", str(ANNFS_BIN)))
    units = [str(tmp_path / n) for n in ("annfs@atlas.service", "data-atlas.mount", "data-atlas.automount")]
    (tmp_path / "annfs@atlas.service").symlink_to(tmp_path / "annfs@.service")
    r = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    if "Failed to" in r.stderr and "bus" in r.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    text = (REPO / "systemd" / "annfs@.service").read_text()
    assert "Type=notify" in text and "ExecStop=" in text and "Restart=on-failure" in text


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_ready_only_when_mount_answers(shared_mnt, tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"annfs-test-{os.getpid()}-{random.randrange(1 << 30)}"
        sock.bind("\0" + name)
        addr = "@" + name
    else:
        addr = str(tmp_path / "notify.sock")
        sock.bind(addr)
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=addr)
    proc = subprocess.Popen([str(ANNFS_BIN), "mount", str(store_path("dense_f32")), str(shared_mnt)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        msg = sock.recv(4096).decode()
        # At the moment READY=1 arrives, the mount answers.
        answered = is_mounted(shared_mnt) and "README.txt" in os.listdir(shared_mnt)
        assert "READY=1" in msg.split("\n"), msg
        assert f"MAINPID={proc.pid}" in msg.split("\n"), msg
        assert answered, "READY=1 sent before the mount answered"
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode().startswith("STOPPING=1")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_no_notify_socket_is_fine(shared_mnt):
    with Mount(store_path(STORE), shared_mnt) as m:
        assert (shared_mnt / "README.txt").exists()
    assert m.proc.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the /var/cache fallback is root's")
def test_service_without_home_keeps_indexes_in_var_cache(shared_mnt):
    """A system service has no $HOME: root's cache and index directories fall back to /var/cache/annfs."""
    import anndata as ad
    idx = Path("/var/cache/annfs/index")
    before = set(idx.glob("*")) if idx.exists() else set()
    env = {"PATH": os.environ["PATH"]}
    proc = subprocess.Popen([str(ANNFS_BIN), "mount", str(store_path(STORE)), str(shared_mnt)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (is_mounted(shared_mnt) and (shared_mnt / "README.txt").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "csc" in os.listdir(shared_mnt / "X"), "no transposed index without $HOME"
        want = ad.read_h5ad(store_path(STORE)).X[:, 1].toarray().ravel()
        got = np.load(shared_mnt / "X" / "cols" / "1.npy")
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert set(idx.glob("*.idx")) - before, "the index was not built under /var/cache/annfs/index"
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1].decode()
        for p in set(idx.glob("*")) - before:
            p.unlink()
    assert "no cache directory" not in err and "no index directory" not in err, err


# ----------------------------------------------------------------------------------------------------------------
# daemon behaviour: signals, log reopening, metrics
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_signal_unmounts(shared_mnt, tmp_path, sig):
    log = tmp_path / "annfs.log"
    r = run_annfs("mount", store_path(STORE), shared_mnt, "--daemon", "--log-file", log, timeout=60)
    assert r.returncode == 0, r.stderr
    assert is_mounted(shared_mnt)
    (pid,) = daemon_pids(shared_mnt)
    os.kill(pid, sig)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20), "daemon did not exit"
    assert not is_mounted(shared_mnt)
    text = log.read_text()
    assert f"signal {int(sig)} received" in text and "unmounted" in text, text


def test_sighup_reopens_log_file(shared_mnt, tmp_path):
    log = tmp_path / "annfs.log"
    with Mount(store_path(STORE), shared_mnt, "--log-file", str(log), "--log-level", "info") as m:
        assert wait_for(lambda: log.exists() and "mounted at" in log.read_text())
        rotated = tmp_path / "annfs.log.1"
        log.rename(rotated)  # what logrotate does
        m.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.exists() and "reopened" in log.read_text()), "no new log file after SIGHUP"
        assert (shared_mnt / "obs.tsv").read_bytes()  # still serving
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(20) == 0
    assert "mounted at" in rotated.read_text() and "unmounted" not in rotated.read_text()
    assert "unmounted" in log.read_text()


def test_log_metrics_line(shared_mnt, tmp_path):
    log = tmp_path / "annfs.log"
    with Mount(store_path(STORE), shared_mnt, "--log-file", str(log), "--log-metrics", "1"):
        (shared_mnt / "obs.tsv").read_bytes()
        assert wait_for(lambda: "bytes_served=" in log.read_text() and "open_files=" in log.read_text(), 5)
        line = [l for l in log.read_text().splitlines() if "metrics:" in l][-1]
        for key in ("cache_hit_rate=", "bytes_served=", "decode_seconds=", "open_files=", "errors="):
            assert key in line, line
        import json
        stats = json.loads((shared_mnt / ".annfs" / "stats.json").read_text())
        assert stats["open_files"] >= 1  # stats.json itself is open while it is read


# ----------------------------------------------------------------------------------------------------------------
# source-change safety
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["rename", "inplace", "truncate"])
def test_source_changed_under_mount_fails_with_eio(shared_mnt, tmp_path, how):
    store = tmp_path / "store.h5ad"
    shutil.copyfile(store_path("dense_f32"), store)
    log = tmp_path / "annfs.log"
    with Mount(store, shared_mnt, "--log-file", str(log)) as m:
        dense = shared_mnt / "X" / "dense.npy"
        good = dense.read_bytes()
        assert good == expected(store, "X/dense.npy")
        if how == "rename":
            new = tmp_path / "new.h5ad"
            shutil.copyfile(store_path("csr_gzip"), new)
            new.rename(store)
        elif how == "inplace":
            with open(store, "r+b") as f:
                f.seek(os.path.getsize(store) // 2)
                f.write(b"\xff" * 4096)
        else:
            os.truncate(store, 4096)

        def refused(path):
            try:
                data = path.read_bytes()
            except OSError as e:
                assert e.errno == errno.EIO, e
                return True
            assert data == good or path != dense, "torn data served"
            return False

        # Cached pages (already read) and never-read files both fail.
        assert wait_for(lambda: refused(dense), 5), "stale data still served after the store changed"
        assert refused(shared_mnt / "obs.tsv")
        assert m.proc.poll() is None, "daemon died"  # no SIGBUS after truncation
        import json
        stats = json.loads((shared_mnt / ".annfs" / "stats.json").read_text())  # still answering
        assert stats["store_changed"] and str(store) in stats["store_changed"]
    assert "changed under the mount" in log.read_text()


# ----------------------------------------------------------------------------------------------------------------
# many readers from several users
# ----------------------------------------------------------------------------------------------------------------

@need_runuser
def test_many_readers_several_users(shared_mnt):
    store = store_path("dense_f32")
    files = ["X/dense.npy", "obs.tsv", "var.tsv", "obs/index.txt"]
    want = {f: expected(store, f) for f in files}
    users = ["root", *OTHER_USERS]
    threads, per_thread = 6, 20
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker(k: int):
        rng = random.Random(k)
        for i in range(per_thread):
            f = rng.choice(files)
            data = want[f]
            off = rng.randrange(max(1, len(data)))
            n = rng.randrange(1, 64 << 10)
            user = users[(k + i) % len(users)]
            try:
                if user == "root":
                    with open(shared_mnt / f, "rb") as fh:
                        got = os.pread(fh.fileno(), n, off)
                else:
                    r = as_user(user, "dd", f"if={shared_mnt / f}", "iflag=skip_bytes,count_bytes",
                                f"skip={off}", f"count={n}", "status=none")
                    if r.returncode != 0:
                        raise OSError(r.stderr.decode())
                    got = r.stdout
                if got != data[off:off + n]:
                    raise AssertionError(f"{user} {f}@{off}+{n}: wrong bytes")
                with lock:
                    done[0] += 1
            except Exception as e:  # noqa: BLE001 -- collected and reported below
                with lock:
                    errors.append(f"{user} {f}: {e}")

    with Mount(store, shared_mnt, "--allow-other", "--threads", "4"):
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        import json
        stats = json.loads((shared_mnt / ".annfs" / "stats.json").read_text())
    assert errors == []
    assert done[0] == threads * per_thread
    assert stats["errors"] == 0
