"""Shared by the matrix-view tests (`test_rows.py`, `test_clients.py`): the stores they mount (conftest's plus
`rows_stores`' edge cases), one mount per store for the session, and the oracle's matrix directories per store.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import conftest
import rows_oracle as ro
from conftest import Mount, fuse_skip_reason
from rows_stores import EXTRA_STORES

_MD_CACHE: dict = {}
_ENT_CACHE: dict = {}


def mdirs(store) -> list[ro.MatrixDir]:
    key = str(store)
    if key not in _MD_CACHE:
        _MD_CACHE.clear()
        _ENT_CACHE.clear()
        _MD_CACHE[key] = ro.matrix_dirs(store)
    return _MD_CACHE[key]


def entries(store, md: ro.MatrixDir) -> ro.Entries:
    key = (str(store), md.rel)
    if key not in _ENT_CACHE:
        _ENT_CACHE[key] = ro.Entries(md)
    return _ENT_CACHE[key]


def store_path(store_id: str) -> Path:
    """conftest's stores plus this module's edge-case stores (generated once per session)."""
    if store_id in EXTRA_STORES:
        p = conftest._WORK / f"{store_id}.h5ad"
        if not p.exists():
            EXTRA_STORES[store_id](p)
        return p
    return conftest.store_path(store_id)


def shared_mount(store_id: str) -> Mount:
    m = conftest._MOUNTS.get(store_id)
    if m is not None and m.proc is not None and m.proc.poll() is None and conftest.is_mounted(m.mnt):
        return m
    m = Mount(store_path(store_id), conftest._WORK / "mnt" / store_id)
    m.start()
    conftest._MOUNTS[store_id] = m  # stopped by conftest at session end
    return m


@pytest.fixture
def need_mount():
    reason = fuse_skip_reason()
    if reason:
        pytest.skip(reason)


def assert_values(got: np.ndarray, want: np.ndarray, what: str):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        assert np.array_equal(got, want, equal_nan=True), f"{what}: values differ"
    else:
        assert np.array_equal(got, want), f"{what}: values differ"
