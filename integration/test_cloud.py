"""Object stores beyond S3, through the same byte-range layer as test_remote.py: Azure Blob Storage (`az://`)
against Azurite, Microsoft's own emulator of the Blob service (installed from npm by scripts/setup-tests.sh), and
Google Cloud Storage (`gs://`) against integration/range_server.py, which answers the requests the GCS client
makes of GCS's XML API (path-style object URLs with HEAD, Range, ETag and If-Match; `list-type=2` listings). Each
store is mounted and compared byte for byte with the same store mounted from the local disk; a prefix mounts as a
collection; missing objects, missing accounts, wrong keys and private objects fail the mount with one line naming
the URL and the cause.

No GCS emulator on PyPI speaks the XML API the client uses (gcp-storage-emulator has no HEAD and no XML listing),
so OAuth is not exercised here: the tests use unsigned requests and a service-account key with `disable_oauth`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ANNFS_BIN, FIXTURES, REPO, need_fuse
from remote_checks import (ZARR, collection_layout, consolidated, mount, remote_zarr_equals_local, same_collection,
                           same_tree, unconsolidated_fails, when_up)
from servers import RangeServer, free_port

AZURITE = REPO / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Microsoft's documentation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# A representative subset of the fixtures (every fixture goes over HTTP and S3 in test_remote.py; the object-store
# clients differ only in how they reach the bytes): plain, gzip, legacy and libver-latest HDF5; Zarr v2, v3,
# sharded v3, nested v2 keys, and one store each format refuses remotely or serves specially.
H5AD = ["dense_f32.h5ad", "csr_gzip.h5ad", "libver_latest.h5ad", "oldver_anndata_0.7.8.h5ad", "scanpy_write.h5ad"]
ZARRS = ["csr_gzip.v2.zarr", "csr_gzip.v3.zarr", "csr_gzip.v3s.zarr", "uns_edge.v2nested.zarr",
         "real_anndata_archive_v0.7.8.archive.zarr"]
KEYS = [f"h5ad/{n}" for n in H5AD] + [f"zarr/{n}/" for n in ZARRS]


def local_of(key: str) -> Path:
    return FIXTURES / key.split("/", 1)[1] if key.startswith("h5ad/") else ZARR / key.split("/")[1]


def files_of(key: str):
    """(object name under the bucket, local file) of every file of a KEYS entry."""
    local = local_of(key)
    if local.is_file():
        yield key, local
    else:
        for f in sorted(local.rglob("*")):
            if f.is_file():
                yield f"{key}{f.relative_to(local).as_posix()}", f


def equals_local(url: str, key: str, env: dict, *extra: str) -> None:
    name = key.split("/")[1]
    if key.startswith("zarr/") and not consolidated(name):
        return unconsolidated_fails(url, env)
    r = mount(url, *extra, env=env)
    loc = mount(str(local_of(key)))
    try:
        remote_zarr_equals_local(r, loc) if key.startswith("zarr/") else same_tree(r, loc)
    finally:
        r.stop()
        loc.stop()


def ls(url: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANNFS_BIN), "ls", url, *extra], capture_output=True, timeout=120, env=env)


def no_cloud_env() -> dict:
    """The environment without any AZURE_*, AZURITE_*, GOOGLE_* or AWS_* setting of the machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZURITE_", "GOOGLE_", "AWS_"))}


# ---------------------------------------------------------------------------------------------------------------
# Azure Blob Storage


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's Blob service on loopback: container `atlas` (private) holding KEYS and a small collection under
    `coll/`, container `public` (anonymous read of blobs) holding one store. Yields (endpoint, service client,
    the local collection directory)."""
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed (scripts/setup-tests.sh)")
    from azure.storage.blob import BlobServiceClient
    port = free_port()
    data = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(data), "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    svc = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};")
    atlas = when_up(lambda: svc.create_container("atlas"), proc, 60)
    for key in KEYS:
        for name, f in files_of(key):
            atlas.upload_blob(name, f.read_bytes())
    coll = collection_layout(tmp_path_factory.mktemp("az-coll"))
    for f in coll.rglob("*"):
        if f.is_file():
            atlas.upload_blob(f"coll/{f.relative_to(coll).as_posix()}", f.read_bytes())
    public = svc.create_container("public", public_access="blob")
    public.upload_blob("dense_f32.h5ad", (FIXTURES / "dense_f32.h5ad").read_bytes())
    yield endpoint, svc, coll
    proc.kill()
    proc.wait()


def emulator_env(endpoint: str) -> dict:
    """Azurite through object_store's emulator switch (its well-known account and key)."""
    return dict(no_cloud_env(), AZURE_STORAGE_USE_EMULATOR="true", AZURITE_BLOB_STORAGE_URL=endpoint)


def account_env(endpoint: str, key: str = ACCOUNT_KEY) -> dict:
    """Azurite as any storage account is reached: account name, shared key and the account's endpoint."""
    return dict(no_cloud_env(), AZURE_STORAGE_ACCOUNT_NAME=ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY=key,
                AZURE_STORAGE_ENDPOINT=f"{endpoint}/{ACCOUNT}")


@need_fuse
@pytest.mark.parametrize("key", KEYS)
def test_azure_equals_local(azurite, key):
    endpoint, _, _ = azurite
    equals_local(f"az://atlas/{key}", key, emulator_env(endpoint))


@need_fuse
def test_azure_account_key_and_endpoint(azurite):
    """The settings a real storage account takes (name, key, endpoint) reach the same bytes."""
    endpoint, _, _ = azurite
    equals_local("az://atlas/h5ad/csr_gzip.h5ad", "h5ad/csr_gzip.h5ad", account_env(endpoint))
    equals_local("az://atlas/zarr/csr_gzip.v3.zarr/", "zarr/csr_gzip.v3.zarr/", account_env(endpoint))


@need_fuse
def test_azure_prefix_is_a_collection(azurite):
    endpoint, _, coll = azurite
    same_collection("az://atlas/coll/", coll, emulator_env(endpoint))


@need_fuse
def test_azure_public_container_without_credentials(azurite):
    """--no-sign-request (or AZURE_SKIP_SIGNATURE=true) reads a public container with no account key anywhere; a
    private one is refused."""
    endpoint, _, _ = azurite
    env = dict(no_cloud_env(), AZURE_STORAGE_ACCOUNT_NAME=ACCOUNT, AZURE_STORAGE_ENDPOINT=f"{endpoint}/{ACCOUNT}")
    r = mount("az://public/dense_f32.h5ad", "--no-sign-request", env=env)
    loc = mount(str(FIXTURES / "dense_f32.h5ad"))
    try:
        same_tree(r, loc)
    finally:
        r.stop()
        loc.stop()
    # The commands that open a store without mounting take the flag, or the client's own switch in the
    # environment.
    r = ls("az://public/dense_f32.h5ad", env, "--no-sign-request")
    assert r.returncode == 0 and b"obsm" in r.stdout, r.stderr
    r = ls("az://public/dense_f32.h5ad", dict(env, AZURE_SKIP_SIGNATURE="true"))
    assert r.returncode == 0 and b"obsm" in r.stdout, r.stderr
    r = ls("az://atlas/h5ad/dense_f32.h5ad", env, "--no-sign-request")
    assert r.returncode != 0 and b"az://atlas/h5ad/dense_f32.h5ad" in r.stderr, r.stderr
    assert b"404" in r.stderr or b"403" in r.stderr or b"not found" in r.stderr, r.stderr


def test_azure_errors_name_the_url_and_cause(azurite):
    endpoint, _, _ = azurite
    env = emulator_env(endpoint)
    r = ls("az://atlas/h5ad/nope.h5ad", env)
    assert r.returncode != 0 and b"az://atlas/h5ad/nope.h5ad" in r.stderr and b"not found" in r.stderr, r.stderr
    r = ls("az://no-such-container/x.h5ad", env)
    assert r.returncode != 0 and b"az://no-such-container/x.h5ad" in r.stderr, r.stderr
    r = ls("az://atlas/coll/study1/notes.txt", env)
    assert r.returncode != 0 and b"neither an HDF5 file nor a Zarr store" in r.stderr, r.stderr
    # No account anywhere: the client cannot be built; one line names the URL and what is missing.
    r = ls("az://atlas/h5ad/dense_f32.h5ad", no_cloud_env())
    assert r.returncode != 0 and b"az://atlas/h5ad/dense_f32.h5ad" in r.stderr, r.stderr
    assert b"no Azure storage account" in r.stderr and b"AZURE_STORAGE_ACCOUNT_NAME" in r.stderr, r.stderr
    # A wrong key: the service refuses the signature.
    wrong = "A" * 86 + "=="
    r = ls("az://atlas/h5ad/dense_f32.h5ad", account_env(endpoint, wrong))
    assert r.returncode != 0 and b"az://atlas/h5ad/dense_f32.h5ad" in r.stderr and b"403" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------------------------
# Google Cloud Storage (XML API on range_server.py)

# A service-account key that turns OAuth off and names the endpoint (object_store's documented test form).
GCS_KEY = ('{"private_key": "unused", "private_key_id": "unused", "client_email": "annfs@test", '
           '"disable_oauth": true, "gcs_base_url": "%s"}')


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """range_server.py over a directory whose sub-directories are buckets: `atlas` (KEYS) and `coll` (a
    collection). Yields (server, base URL, local collection directory)."""
    root = tmp_path_factory.mktemp("gcs")
    for key in KEYS:
        for name, f in files_of(key):
            (root / "atlas" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / "atlas" / name)
    coll = collection_layout(root / "coll")
    srv = RangeServer(root)
    yield srv, f"http://127.0.0.1:{srv.port}", coll
    srv.kill()


def gcs_env(base: str) -> dict:
    return dict(no_cloud_env(), GOOGLE_SERVICE_ACCOUNT_KEY=GCS_KEY % base)


@need_fuse
@pytest.mark.parametrize("key", KEYS)
def test_gcs_equals_local(gcs, key):
    _, base, _ = gcs
    equals_local(f"gs://atlas/{key}", key, gcs_env(base))


@need_fuse
def test_gcs_unsigned_requests(gcs):
    """--no-sign-request with only the endpoint set (GOOGLE_BASE_URL): no credentials are looked for."""
    _, base, _ = gcs
    env = dict(no_cloud_env(), GOOGLE_BASE_URL=base)
    equals_local("gs://atlas/h5ad/dense_f32.h5ad", "h5ad/dense_f32.h5ad", env, "--no-sign-request")


@need_fuse
def test_gcs_prefix_is_a_collection(gcs):
    _, base, coll = gcs
    same_collection("gs://coll/", coll, gcs_env(base))


def test_gcs_errors_name_the_url_and_cause(gcs, tmp_path):
    _, base, _ = gcs
    env = gcs_env(base)
    r = ls("gs://atlas/h5ad/nope.h5ad", env)
    assert r.returncode != 0 and b"gs://atlas/h5ad/nope.h5ad" in r.stderr and b"not found" in r.stderr, r.stderr
    r = ls("gs://atlas/zarr/nope.zarr/", env)
    assert r.returncode != 0 and b"no Zarr store" in r.stderr and b"nope.zarr" in r.stderr, r.stderr
    # No credentials anywhere (and no gcloud file in HOME): the metadata server is all that is left, and failing
    # it is said to be missing credentials, with where to set them.
    r = ls("gs://atlas/h5ad/dense_f32.h5ad", dict(no_cloud_env(), GOOGLE_BASE_URL=base, HOME=str(tmp_path)))
    assert r.returncode != 0 and b"gs://atlas/h5ad/dense_f32.h5ad" in r.stderr, r.stderr
    assert b"no usable credentials" in r.stderr and b"GOOGLE_APPLICATION_CREDENTIALS" in r.stderr, r.stderr
    forbidding = RangeServer(tmp_path, "--forbid")
    try:
        r = ls("gs://atlas/h5ad/dense_f32.h5ad", gcs_env(f"http://127.0.0.1:{forbidding.port}"))
        assert r.returncode != 0 and b"gs://atlas/h5ad/dense_f32.h5ad" in r.stderr and b"403" in r.stderr, r.stderr
    finally:
        forbidding.kill()
