"""The Debian package (scripts/package.sh): built from the binary under test (`--no-build`, no recompiling),
installed with `dpkg -i`, mounted through `mount -t fuse.annfs` and an /etc/fstab line with no other set-up,
read back against the anndata oracle, and removed with `dpkg -r` (then purged: no trace left).

Needs root (dpkg -i, mount(8), /etc/fstab) and dpkg; skips otherwise.  A /sbin/mount.fuse.annfs symlink that no
package owns (`annfs install-helper`) is put back after `dpkg -r`; the fstab line is removed whatever happens.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import oracle
from conftest import ANNFS_BIN, REPO, force_unmount, is_mounted, need_fuse

IS_ROOT = os.geteuid() == 0
HAS_DPKG = shutil.which("dpkg") is not None and shutil.which("dpkg-deb") is not None
pytestmark = [
    need_fuse,
    pytest.mark.skipif(not IS_ROOT, reason="installing a package and mounting through mount(8) need root"),
    pytest.mark.skipif(not HAS_DPKG, reason="dpkg/dpkg-deb are missing (not a Debian system)"),
]

HELPER = Path("/sbin/mount.fuse.annfs")
FSTAB = Path("/etc/fstab")
FSTAB_MARK = "# annfs integration/test_package.py (removed by the test)"
VERSION = re.search(r'^version = "(.+)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)


def run(*cmd, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def owned_by_a_package(path: Path) -> bool:
    return run("dpkg", "-S", path).returncode == 0


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = run("bash", REPO / "scripts" / "package.sh", "--no-build", "--out", out, timeout=900,
            env={**os.environ, "ANNFS_BIN": str(ANNFS_BIN)})
    assert r.returncode == 0, r.stderr
    deb = Path(r.stdout.strip().splitlines()[-1])
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"annfs_{VERSION}_{arch}.deb" and deb.exists()
    return deb


@pytest.fixture(scope="module")
def installed(deb):
    previous = os.readlink(HELPER) if HELPER.is_symlink() and not owned_by_a_package(HELPER) else None
    r = run("dpkg", "-i", deb)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield deb
    finally:
        r = run("dpkg", "-r", "annfs")
        assert r.returncode == 0, r.stdout + r.stderr
        # -r keeps the package's status entry (config-files, as it has a postrm); purge drops it.
        purged = run("dpkg", "--purge", "annfs")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        assert "annfs" not in run("dpkg-query", "-W", "-f=${Package}\n", "annfs").stdout
        left = [p for p in ("/usr/bin/annfs", HELPER, "/lib/systemd/system/annfs@.service",
                            "/usr/share/man/man8/annfs.8.gz") if os.path.lexists(p)]
        if previous is not None:
            os.symlink(previous, HELPER)
        assert left == [], f"dpkg -r left {left}"


@pytest.fixture
def mnt():
    """A mount point outside pytest's 0700 tmp dirs, cleaned up whatever happens."""
    d = Path(tempfile.mkdtemp(prefix="annfs-pkg-", dir="/tmp"))
    m = d / "mnt"
    m.mkdir()
    yield m
    if is_mounted(m):
        run("umount", "-l", m)
        force_unmount(m)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def sample_tree() -> dict[str, bytes]:
    """The sample store's files as anndata + numpy render them (the oracle)."""
    return oracle.expected_tree(REPO / "data" / "sample.h5ad")


def serving_exe(mnt: Path) -> list[str]:
    """The executables of the daemons serving `mnt`: processes whose argv names the mount point, except
    fusermount3's auto-unmount watcher."""
    exes = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(mnt).encode() in (d / "cmdline").read_bytes().split(b"\0"):
                exe = os.readlink(d / "exe")
                if not os.path.basename(exe).startswith("fusermount"):
                    exes.append(exe)
        except OSError:
            continue
    return exes


def unmount(mnt: Path) -> None:
    r = run("umount", mnt)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while serving_exe(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(mnt) and serving_exe(mnt) == []


def test_package_metadata_and_contents(deb):
    fields = run("dpkg-deb", "-f", deb, "Package", "Version", "Depends").stdout
    assert f"Package: annfs\nVersion: {VERSION}\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    assert "fuse3" in [d.strip().split(" ")[0] for d in depends.split(",")], depends
    listing = run("dpkg-deb", "-c", deb).stdout
    for path in ("./usr/bin/annfs", "./sbin/mount.fuse.annfs -> /usr/bin/annfs", "./lib/systemd/system/annfs@.service",
                 "./usr/share/man/man8/annfs.8.gz", "./usr/share/man/man8/annfs-mount.8.gz",
                 "./usr/share/bash-completion/completions/annfs", "./usr/share/zsh/vendor-completions/_annfs",
                 "./usr/share/fish/vendor_completions.d/annfs.fish", "./usr/share/doc/annfs/README.md",
                 "./usr/share/doc/annfs/docs/REFERENCE.md", "./usr/share/doc/annfs/copyright"):
        assert path in listing, f"{path} missing from the package:\n{listing}"


def test_installed_binary_version_man_completions_unit(installed):
    r = run("/usr/bin/annfs", "--version")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(rf"annfs {re.escape(VERSION)} \(git ([0-9a-f]{{12}}|unknown)\)\n", r.stdout)
    assert m, r.stdout
    if m.group(1) != "unknown" and shutil.which("git") and (REPO / ".git").exists():
        assert run("git", "-C", REPO, "cat-file", "-e", f"{m.group(1)}^{{commit}}").returncode == 0, m.group(1)
    # The man pages are generated from the CLI: every mount option of `annfs mount --help` is in annfs-mount(8).
    main_page = gzip.decompress(Path("/usr/share/man/man8/annfs.8.gz").read_bytes()).decode()
    assert ".TH annfs 8" in main_page and "fuse.annfs" in main_page and "annfs\\-mount(8)" in main_page
    mount_page = gzip.decompress(Path("/usr/share/man/man8/annfs-mount.8.gz").read_bytes()).decode()
    help_opts = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", run("/usr/bin/annfs", "mount", "--help").stdout, re.M))
    assert {"--cache-size", "--overlay", "--allow-other"} <= help_opts
    for opt in help_opts - {"--help", "--version"}:
        assert opt.replace("-", "\\-") in mount_page, f"{opt} missing from annfs-mount(8)"
    r = run("bash", "-c", "source /usr/share/bash-completion/completions/annfs && complete -p annfs")
    assert r.returncode == 0 and "annfs" in r.stdout, r.stderr
    unit = Path("/lib/systemd/system/annfs@.service").read_text()
    assert "ExecStart=/usr/bin/annfs mount " in unit and "/usr/local/bin" not in unit


def test_mount_t_fuse_annfs(installed, mnt, sample_tree):
    r = run("mount", "-t", "fuse.annfs", REPO / "data" / "sample.h5ad", mnt, "-o", "ro,cache_size=64M", timeout=60)
    assert r.returncode == 0, r.stderr
    assert is_mounted(mnt), "mount returned before the mount was live"
    assert serving_exe(mnt) == ["/usr/bin/annfs"], "not served by the packaged binary"
    assert (mnt / "obs.tsv").read_bytes() == sample_tree["obs.tsv"]
    assert (mnt / "X" / "dense.npy").read_bytes() == sample_tree["X/dense.npy"]
    unmount(mnt)


def test_fstab_line(installed, mnt, sample_tree):
    line = f"{REPO / 'data' / 'sample.h5ad'} {mnt} fuse.annfs ro,noauto,nofail,cache_size=64M 0 0"
    original = FSTAB.read_text() if FSTAB.exists() else None
    with open(FSTAB, "a") as f:
        f.write(("" if not original or original.endswith("\n") else "\n") + f"{FSTAB_MARK}\n{line}\n")
    try:
        r = run("mount", mnt, timeout=60)
        assert r.returncode == 0, r.stderr
        assert serving_exe(mnt) == ["/usr/bin/annfs"]
        assert (mnt / "var.tsv").read_bytes() == sample_tree["var.tsv"]
        assert (mnt / "obsm" / "X_umap.npy").read_bytes() == sample_tree["obsm/X_umap.npy"]
        unmount(mnt)
    finally:
        kept = [l for l in FSTAB.read_text().splitlines(keepends=True) if l.rstrip("\n") not in (FSTAB_MARK, line)]
        if original is None and not "".join(kept).strip():
            FSTAB.unlink()
        else:
            FSTAB.write_text("".join(kept))
    assert (FSTAB.read_text() if FSTAB.exists() else None) in (original, (original or "") + "\n")
