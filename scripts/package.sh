#!/usr/bin/env bash
# Builds the Debian package annfs_<version>_<arch>.deb (plain dpkg-deb from a staged tree: no
# packaging tool to compile) holding
#   /usr/bin/annfs                      the binary (debug info stripped, symbols kept)
#   /sbin/mount.fuse.annfs              -> /usr/bin/annfs: `mount -t fuse.annfs` and fstab lines
#   /lib/systemd/system/annfs@.service  one store per instance (/etc/annfs/NAME.conf)
#   /usr/share/man/man8/annfs*.8.gz     man pages generated from the CLI definition
#   bash, zsh and fish completions, and the docs (README, docs/, systemd/ with the example units)
# and depending on fuse3 (plus the shared libraries the binary links, from dpkg-shlibdeps).
#
# Usage: bash scripts/package.sh [--no-build] [--out DIR]
#   --no-build  package the binary already built (target/release/annfs, or $ANNFS_BIN) instead of
#               running cargo build; the man page generator is built only if missing
#   --out DIR   where to write the .deb (default: the repository root)
# Prints the path of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

build=1
out=$PWD
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) build=0 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    *) echo "usage: $0 [--no-build] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

apt_install dpkg-dev binutils
bin=${ANNFS_BIN:-target/release/annfs}
gen=target/release/examples/gen_docs
export PATH="$PWD/.venv/bin:$PATH"
if [ "$build" = 1 ]; then
  cargo build --release --locked --bin annfs --example gen_docs
elif [ ! -x "$gen" ]; then
  cargo build --release --locked --example gen_docs
fi
[ -x "$bin" ] || { echo "package: $bin is not built" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
reported=$("$bin" --version)
commit=${reported##*git }
commit=${commit%)}
case $reported in
  "annfs $version "*) ;;
  *) echo "package: $bin reports '$reported', Cargo.toml says $version (rebuild it)" >&2; exit 1 ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
doc=$root/usr/share/doc/annfs

install -D -m 755 "$bin" "$root/usr/bin/annfs"
strip --strip-debug "$root/usr/bin/annfs"
mkdir -p "$root/sbin"
ln -s /usr/bin/annfs "$root/sbin/mount.fuse.annfs"

# The unit runs the packaged binary (the repository's copy names install-helper's /usr/local/bin).
mkdir -p "$root/lib/systemd/system" "$doc/systemd"
sed 's#/usr/local/bin/annfs#/usr/bin/annfs#g' systemd/annfs@.service > "$root/lib/systemd/system/annfs@.service"
for f in systemd/data-atlas.mount systemd/data-atlas.automount systemd/README.md; do
  install -m 644 "$f" "$doc/systemd/"
done

"$gen" "$stage/gen" >/dev/null
mkdir -p "$root/usr/share/man/man8"
for page in "$stage"/gen/man/*.8; do
  gzip -9n < "$page" > "$root/usr/share/man/man8/$(basename "$page").gz"
done
install -D -m 644 "$stage/gen/completions/annfs.bash" "$root/usr/share/bash-completion/completions/annfs"
install -D -m 644 "$stage/gen/completions/_annfs" "$root/usr/share/zsh/vendor-completions/_annfs"
install -D -m 644 "$stage/gen/completions/annfs.fish" "$root/usr/share/fish/vendor_completions.d/annfs.fish"

# The docs keep the repository's layout, so the README's relative links work.
install -D -m 644 README.md "$doc/README.md"
mkdir -p "$doc/docs"
install -m 644 docs/*.md "$doc/docs/"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: annfs
Comment: Built from git commit $commit.
 The binary links statically the HDF5 library (BSD-3-Clause-style HDF5 licence) and Rust crates
 under MIT, Apache-2.0, BSD or Zlib licences (Cargo.lock of the source lists them).

Files: *
License: MIT or Apache-2.0
EOF

# Dependencies: fuse3 (fusermount3, the mount helper's runtime) and the shared libraries.
mkdir -p "$stage/debian"
printf 'Source: annfs\n\nPackage: annfs\nArchitecture: any\n' > "$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O -e root/usr/bin/annfs 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
depends="fuse3${shlibs:+, $shlibs}"
rm -rf "$stage/debian"

mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: annfs
Version: $version
Architecture: $arch
Maintainer: annfs developers <annfs@users.noreply.github.com>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: admin
Priority: optional
Homepage: https://github.com/annfs/annfs
Description: mount AnnData stores (.h5ad, .zarr) as plain, lazily read files
 annfs is a FUSE file system that shows an AnnData store (an .h5ad file, a Zarr
 directory, or a directory of them) as a read-only tree of plain files: TSV
 tables, .npy arrays, MatrixMarket and 10x directories, row and metadata
 subsets. Reads are resolved lazily through one bounded chunk cache.
 .
 Includes the mount(8) helper for fuse.annfs mounts and fstab lines, and a
 systemd template unit (annfs@NAME.service).
EOF
# Tell a running systemd about the new or removed unit file.
for script in postinst postrm; do
  cat > "$root/DEBIAN/$script" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi
EOF
  chmod 755 "$root/DEBIAN/$script"
done

mkdir -p "$out"
deb="$out/annfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
