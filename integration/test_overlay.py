"""The write overlay (`annfs mount --overlay DIR`, docs/OVERLAY.md): copy-up, whiteouts, renames, persistence across
remounts, the pristine view after removing DIR, a reference-model property test against a local directory, SIGKILL
during copy-ups and writes, path escapes, and `annfs materialize`."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO, Mount, is_mounted, need_fuse, run_annfs

pytestmark = need_fuse

SAMPLE = REPO / "data" / "sample.h5ad"
BOOKKEEPING = ".annfs-ovl"


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def sample_unchanged():
    before = sha(SAMPLE)
    yield
    assert sha(SAMPLE) == before, "the store was modified"


@pytest.fixture
def ov(tmp_path):
    """(mount factory, overlay dir): `start()` mounts the sample store with the overlay."""
    mounts = []
    odir = tmp_path / "overlay"

    def start(*extra, command=("mount",)):
        m = Mount(SAMPLE, tmp_path / "mnt", "--overlay", str(odir), *extra, command=command).start()
        mounts.append(m)
        return m

    yield start, odir
    for m in mounts:
        m.stop()


def pristine(rel: str) -> bytes:
    r = run_annfs("cat", SAMPLE, rel)
    assert r.returncode == 0, r.stderr
    return r.stdout


def no_bookkeeping(root: Path):
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            assert not n.startswith(BOOKKEEPING), f"bookkeeping entry visible: {dp}/{n}"


# ------------------------------------------------------------------------------------------------------------
# Semantics through a real mount
# ------------------------------------------------------------------------------------------------------------

def test_read_only_without_overlay(tmp_path):
    with Mount(SAMPLE, tmp_path / "mnt") as m:
        with pytest.raises(OSError) as e:
            open(m.mnt / "obs.tsv", "r+b")
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError) as e:
            (m.mnt / "new.txt").write_text("x")
        assert e.value.errno == errno.EROFS


def test_copy_up_write_append_truncate(ov):
    start, odir = ov
    m = start()
    obs = pristine("obs.tsv")
    mid = len(obs) // 2
    with open(m.mnt / "obs.tsv", "r+b") as f:
        f.seek(mid)
        f.write(b"XYZ")
    want = obs[:mid] + b"XYZ" + obs[mid + 3:]
    assert (m.mnt / "obs.tsv").read_bytes() == want
    assert (odir / "obs.tsv").read_bytes() == want
    assert os.stat(m.mnt / "obs.tsv").st_size == len(obs)

    npy = pristine("obsm/X_pca.npy")
    with open(m.mnt / "obsm/X_pca.npy", "ab") as f:
        f.write(b"tail")
    assert (m.mnt / "obsm/X_pca.npy").read_bytes() == npy + b"tail"

    idx = pristine("obs/index.txt")
    os.truncate(m.mnt / "obs/index.txt", 7)
    assert (m.mnt / "obs/index.txt").read_bytes() == idx[:7]
    os.truncate(m.mnt / "obs/index.txt", 20)
    assert (m.mnt / "obs/index.txt").read_bytes() == idx[:7] + b"\0" * 13

    # O_TRUNC skips the copy.
    with open(m.mnt / "var.tsv", "wb") as f:
        f.write(b"new\n")
    assert (m.mnt / "var.tsv").read_bytes() == b"new\n"
    # Untouched files still read from the store.
    assert (m.mnt / "obsm/X_umap.npy").read_bytes() == pristine("obsm/X_umap.npy")
    assert not (odir / "obsm" / "X_umap.npy").exists()
    no_bookkeeping(m.mnt)


def test_new_files_dirs_symlinks_and_metadata(ov):
    start, odir = ov
    m = start()
    (m.mnt / "results").mkdir()
    (m.mnt / "results" / "a.txt").write_text("hello")
    (m.mnt / "obs" / "extra.txt").write_text("x\n")
    os.symlink("a.txt", m.mnt / "results" / "link")
    assert os.readlink(m.mnt / "results" / "link") == "a.txt"
    assert (m.mnt / "results" / "link").read_text() == "hello"
    os.chmod(m.mnt / "results" / "a.txt", 0o600)
    assert os.stat(m.mnt / "results" / "a.txt").st_mode & 0o777 == 0o600
    os.utime(m.mnt / "results" / "a.txt", (1_000_000, 2_000_000))
    assert os.stat(m.mnt / "results" / "a.txt").st_mtime == 2_000_000
    os.setxattr(m.mnt / "results" / "a.txt", "user.note", b"v1")
    assert os.getxattr(m.mnt / "results" / "a.txt", "user.note") == b"v1"
    os.chmod(m.mnt / "obs.tsv", 0o600)  # metadata change of a virtual file copies it up
    assert os.stat(m.mnt / "obs.tsv").st_mode & 0o777 == 0o600
    assert (m.mnt / "obs.tsv").read_bytes() == pristine("obs.tsv")
    assert "extra.txt" in os.listdir(m.mnt / "obs") and "index.txt" in os.listdir(m.mnt / "obs")
    with pytest.raises(OSError):
        os.link(m.mnt / "results" / "a.txt", m.mnt / "results" / "hard")
    with pytest.raises(OSError):
        (m.mnt / ".annfs-ovl-wh.x").write_text("no")
    st = os.statvfs(m.mnt)
    assert st.f_blocks == os.statvfs(odir).f_blocks
    assert (odir / "results" / "a.txt").read_text() == "hello"


def test_rename_across_virtual_and_overlay(ov):
    start, odir = ov
    m = start()
    var = pristine("var.tsv")
    os.rename(m.mnt / "var.tsv", m.mnt / "var_renamed.tsv")          # virtual -> new name
    assert not (m.mnt / "var.tsv").exists()
    assert (m.mnt / "var_renamed.tsv").read_bytes() == var
    (m.mnt / "mine.txt").write_text("mine")
    os.rename(m.mnt / "mine.txt", m.mnt / "obs.tsv")                  # overlay file over a virtual one
    assert (m.mnt / "obs.tsv").read_text() == "mine"
    os.rename(m.mnt / "obsm" / "X_pca.tsv", m.mnt / "X_pca_moved.tsv")  # across directories
    assert (m.mnt / "X_pca_moved.tsv").read_bytes() == pristine("obsm/X_pca.tsv")
    (m.mnt / "d1").mkdir()
    (m.mnt / "d1" / "f").write_text("f")
    os.rename(m.mnt / "d1", m.mnt / "d2")                              # overlay directory
    assert (m.mnt / "d2" / "f").read_text() == "f"
    with pytest.raises(OSError) as e:
        os.rename(m.mnt / "obsm", m.mnt / "obsm2")                     # virtual directory: EXDEV, mv copies
    assert e.value.errno == errno.EXDEV
    subprocess.run(["mv", str(m.mnt / "uns"), str(m.mnt / "uns2")], check=True)
    assert not (m.mnt / "uns").exists() and (m.mnt / "uns2").is_dir()
    (m.mnt / "uns").mkdir()                                            # opaque: over a deleted virtual dir
    (m.mnt / "uns" / "g").write_text("g")
    os.rename(m.mnt / "uns", m.mnt / "uns3")                           # shows no virtual entry: moves
    assert os.listdir(m.mnt / "uns3") == ["g"] and not (m.mnt / "uns").exists()
    names = sorted(os.listdir(m.mnt))
    assert "var.tsv" not in names and "var_renamed.tsv" in names and "d2" in names
    m.stop()
    m = start()
    assert sorted(os.listdir(m.mnt)) == names
    assert (m.mnt / "obs.tsv").read_text() == "mine"
    assert (m.mnt / "d2" / "f").read_text() == "f"
    assert os.listdir(m.mnt / "uns3") == ["g"]
    no_bookkeeping(m.mnt)


def test_unlink_whiteout_persists_until_dir_removed(ov):
    start, odir = ov
    m = start()
    subprocess.run(["rm", str(m.mnt / "obsm" / "X_umap.npy")], check=True)
    assert not (m.mnt / "obsm" / "X_umap.npy").exists()
    assert "X_umap.npy" not in os.listdir(m.mnt / "obsm")
    subprocess.run(["rm", "-r", str(m.mnt / "uns")], check=True)
    assert not (m.mnt / "uns").exists()
    (m.mnt / "uns").mkdir()                                            # a new, empty directory
    assert os.listdir(m.mnt / "uns") == []
    m.stop()
    m = start()
    assert not (m.mnt / "obsm" / "X_umap.npy").exists()
    assert os.listdir(m.mnt / "uns") == []
    m.stop()
    shutil.rmtree(odir)
    m = start()
    assert (m.mnt / "obsm" / "X_umap.npy").read_bytes() == pristine("obsm/X_umap.npy")
    assert os.listdir(m.mnt / "uns")


def test_sed_in_place_persists(ov):
    start, odir = ov
    m = start()
    subprocess.run(["sed", "-i", "s/B cell/B_cell/", str(m.mnt / "obs.tsv")], check=True)
    edited = pristine("obs.tsv").replace(b"B cell", b"B_cell", 1)
    edited = b"\n".join(l.replace(b"B cell", b"B_cell", 1) for l in pristine("obs.tsv").split(b"\n"))
    assert (m.mnt / "obs.tsv").read_bytes() == edited
    m.stop()
    m = start()
    assert (m.mnt / "obs.tsv").read_bytes() == edited
    no_bookkeeping(m.mnt)


def test_rows_stay_read_only(ov):
    start, _ = ov
    m = start()
    rows = m.mnt / "X" / "rows"
    if not rows.is_dir():
        pytest.skip("no X/rows in the sample")
    name = sorted(os.listdir(rows))[0]
    assert (rows / name).read_bytes()
    with pytest.raises(OSError) as e:
        (rows / "new.txt").write_text("x")
    assert e.value.errno == errno.EROFS


# ------------------------------------------------------------------------------------------------------------
# Reference model: the same operations on the mount and on a local copy leave identical trees
# ------------------------------------------------------------------------------------------------------------

NAMES = ["X_pca.npy", "X_umap.tsv", "a", "b", "d1", "d1/x", "d1/d2", "d2"]

op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.integers(0, 3000), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 4000)),
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.binary(max_size=200)),
    st.tuples(st.just("mkdir"), st.sampled_from(NAMES)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.sampled_from(NAMES)),
    st.tuples(st.just("rmdir"), st.sampled_from(NAMES)),
)


def apply(root: Path, o) -> int:
    """Applies one operation below root; returns 0 or the errno."""
    kind, p = o[0], root / o[1]
    try:
        if kind == "write":
            with open(p, "r+b") as f:
                f.seek(o[2])
                f.write(o[3])
        elif kind == "append":
            with open(p, "ab") as f:
                f.write(o[2])
        elif kind == "truncate":
            os.truncate(p, o[2])
        elif kind == "create":
            with open(p, "wb") as f:
                f.write(o[2])
        elif kind == "mkdir":
            os.mkdir(p)
        elif kind == "rename":
            os.rename(p, root / o[2])
        elif kind == "unlink":
            os.unlink(p)
        elif kind == "rmdir":
            os.rmdir(p)
        return 0
    except OSError as e:
        return e.errno


def snapshot(root: Path) -> dict:
    out = {}
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        for d in dns:
            out[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in fns:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dp, f).read_bytes()
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(op, min_size=1, max_size=20))
def test_reference_model(tmp_path_factory, ops):
    tmp = tmp_path_factory.mktemp("model")
    ref = tmp / "ref"
    ref.mkdir()
    for n in ["X_pca.npy", "X_pca.tsv", "X_umap.npy", "X_umap.tsv"]:
        (ref / n).write_bytes(pristine(f"obsm/{n}"))
    odir = tmp / "overlay"
    m = Mount(SAMPLE, tmp / "mnt", "--overlay", str(odir)).start()
    try:
        for o in ops:
            got, want = apply(m.mnt / "obsm", o), apply(ref, o)
            assert (got == 0) == (want == 0), f"{o}: mount errno {got}, local errno {want}"
        assert snapshot(m.mnt / "obsm") == snapshot(ref)
        m.stop()
        m.start()
        assert snapshot(m.mnt / "obsm") == snapshot(ref), "state changed across a remount"
    finally:
        m.stop()


# ------------------------------------------------------------------------------------------------------------
# Crash safety
# ------------------------------------------------------------------------------------------------------------

def wait_unmounted(mnt: Path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("when", ["during", "after"])
def test_sigkill_during_large_copy_up(ov, when):
    """SIGKILL while the copy-up's temp file is being filled (or right after the write): after a remount the file
    is either pristine or fully copied and written, and no temp file is left or visible."""
    start, odir = ov
    size = 512 << 20
    m = start(command=("bench-mount", "--zero-file", str(size)))
    zero = m.mnt / ".annfs" / "zero"
    work = odir / ".annfs-ovl-work"
    writer = subprocess.Popen(
        ["python3", "-c", f"f=open({str(zero)!r},'r+b'); f.seek({size - 4}); f.write(b'DONE'); f.close()"],
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    if when == "during":
        seen = False
        while not seen and time.monotonic() < deadline and writer.poll() is None:
            seen = any(p.stat().st_size > 0 for p in work.iterdir()) if work.exists() else False
            time.sleep(0.005)
        assert seen, "the copy-up finished before it could be interrupted"
    else:
        writer.wait(60)
    m.stop(sig=signal.SIGKILL)
    writer.wait(60)
    wait_unmounted(m.mnt)
    m = start(command=("bench-mount", "--zero-file", str(size)))
    assert not work.exists() or os.listdir(work) == [], "leftover temp files after remount"
    up = odir / ".annfs" / "zero"
    assert os.stat(zero).st_size == size
    with open(zero, "rb") as f:
        f.seek(size - 4)
        tail = f.read(4)
    if when == "during":
        assert not up.exists() and tail == b"\0\0\0\0", "torn copy-up visible"
    else:
        assert up.stat().st_size == size and tail == b"DONE"
    no_bookkeeping(m.mnt / ".annfs")


def test_sigkill_during_writes(ov):
    start, odir = ov
    m = start()
    target = m.mnt / "results"
    target.mkdir()
    script = (f"import os\nfor i in range(100000):\n"
              f"    p={str(target)!r}+'/f%d'%(i%5)\n"
              f"    open(p+'.tmp','wb').write(b'x'*(1000+i))\n"
              f"    os.rename(p+'.tmp',p)\n")
    writer = subprocess.Popen(["python3", "-c", script], stderr=subprocess.DEVNULL)
    time.sleep(0.7)
    m.stop(sig=signal.SIGKILL)
    writer.kill()
    writer.wait()
    wait_unmounted(m.mnt)
    m = start()
    for f in os.listdir(target):
        data = (target / f).read_bytes()
        assert set(data) <= {ord("x")}
    no_bookkeeping(m.mnt)
    assert (m.mnt / "obs.tsv").read_bytes() == pristine("obs.tsv")


# ------------------------------------------------------------------------------------------------------------
# Path escapes
# ------------------------------------------------------------------------------------------------------------

def test_symlinks_in_dir_are_not_followed_by_the_daemon(ov, tmp_path):
    start, odir = ov
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    odir.mkdir()
    os.symlink(outside, odir / "abs")                       # absolute symlink
    os.symlink("../outside", odir / "rel")                  # relative, pointing out of DIR
    m = start()
    assert os.path.islink(m.mnt / "abs") and os.path.islink(m.mnt / "rel")
    assert os.readlink(m.mnt / "abs") == str(outside)
    # A symlink in DIR is shown as a symlink (the kernel, not the daemon, follows it, as on any filesystem).
    # Replace a virtual directory by a symlink behind the mount's back while a descriptor of the directory is
    # open: operations through it reach the daemon by inode, and it must not write through the symlink.
    dfd = os.open(m.mnt / "obsm", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.symlink(outside, odir / "obsm")
        for name, flags in [("X_pca.npy", os.O_WRONLY | os.O_APPEND), ("new.txt", os.O_WRONLY | os.O_CREAT)]:
            try:
                fd = os.open(name, flags, 0o644, dir_fd=dfd)
                os.write(fd, b"x")
                os.close(fd)
            except OSError:
                pass
        try:
            os.mkdir("sub", dir_fd=dfd)
        except OSError:
            pass
    finally:
        os.close(dfd)
    assert sorted(os.listdir(outside)) == ["secret"], "wrote outside the overlay directory"
    assert (outside / "secret").read_text() == "secret"


def test_dotdot_and_reserved_names(ov):
    start, odir = ov
    m = start()
    os.symlink("../../../../etc/passwd", m.mnt / "up")
    assert os.readlink(odir / "up") == "../../../../etc/passwd"   # stored verbatim, resolved by the kernel
    for bad in [".annfs-ovl-work", ".annfs-ovl-wh.obs.tsv", ".annfs-ovl-opaque"]:
        assert not (m.mnt / bad).exists()
        with pytest.raises(OSError):
            os.mkdir(m.mnt / bad)
    assert not any(n.startswith(BOOKKEEPING) for n in os.listdir(m.mnt))


# ------------------------------------------------------------------------------------------------------------
# annfs materialize
# ------------------------------------------------------------------------------------------------------------

def test_materialize(tmp_path):
    out = tmp_path / "out"
    r = run_annfs("materialize", SAMPLE, "obs.tsv", "obsm", "--to", out)
    assert r.returncode == 0, r.stderr
    assert (out / "obs.tsv").read_bytes() == pristine("obs.tsv")
    for n in ["X_pca.npy", "X_umap.npy", "X_umap.tsv"]:
        assert (out / "obsm" / n).read_bytes() == pristine(f"obsm/{n}")
    assert not (out / ".annfs-ovl-work").exists()
    np.load(out / "obsm" / "X_umap.npy")
    r = run_annfs("materialize", SAMPLE, "no/such", "--to", out)
    assert r.returncode != 0 and b"no/such" in r.stderr
