#!/bin/sh
# Builds the podvm guest kernel: Debian's linux-source-6.1, the patches in
# patches/, tinyconfig plus podvm.config. Writes OUTDIR/vmlinux (stripped, with
# its PVH entry) and OUTDIR/vmlinux.version.
#
# The result is cached under $PODVM_CACHE/kernel/KEY (default
# /var/cache/podvm), KEY hashing the config, the patches, this script and the
# linux-source version, so a rebuild happens only when one of them changes.
# Nothing is installed into the host's /boot.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
tarball=${LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
cache=${PODVM_CACHE:-/var/cache/podvm}/kernel

if [ ! -f "$tarball" ]; then
	echo "build.sh: $tarball not found: run 'make deps' (or apt-get install linux-source-6.1)" >&2
	exit 1
fi
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1 2>/dev/null || stat -c %s-%Y "$tarball")
key=$( (cat "$here/podvm.config" "$here"/patches/*.patch "$here/build.sh"; echo "$srcver") | sha256sum | cut -c1-16)

mkdir -p "$out"
if [ -f "$cache/$key/vmlinux" ] && [ -f "$cache/$key/vmlinux.version" ]; then
	cp "$cache/$key/vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
	cp "$cache/$key/vmlinux.version" "$out/vmlinux.version"
	echo "kernel: cached $key ($(cat "$out/vmlinux.version"))"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/podvm-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "kernel: building $key in $work (about 4 minutes on 2 cores)"
tar -C "$work" --strip-components=1 -xf "$tarball"
cd "$work"
for p in "$here"/patches/*.patch; do
	patch -s -p1 < "$p"
done

# A fixed build identity keeps the image byte-for-byte reproducible.
export ARCH=x86_64 KBUILD_BUILD_TIMESTAMP="2026-01-01 00:00:00 UTC" KBUILD_BUILD_USER=podvm KBUILD_BUILD_HOST=podvm
make -s tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/podvm.config" >/dev/null
make -s olddefconfig >/dev/null 2>&1

# Every option asked for must have survived olddefconfig.
missing=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		grep -qxF "$line" .config || { echo "kernel config: $line did not stick (a dependency is missing)" >&2; missing=1; } ;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }; sym=${sym%% *}
		if grep -q "^$sym=" .config; then echo "kernel config: $sym should be off" >&2; missing=1; fi ;;
	esac
done < "$here/podvm.config"
[ "$missing" = 0 ] || exit 1

# Code the compiler deems cold (every __init function: the whole boot) is
# built for size whatever the -O level, and GCC then inlines memset and
# memcpy of unknown length as byte-wise `rep stosb`/`rep movsb`, which TCG
# runs one byte per step (the boot's memblock zeroing alone was ~3M steps).
# Unrolled loops of word moves instead, everywhere.
make -s -j"$(nproc)" KCFLAGS=-mstringop-strategy=unrolled_loop vmlinux
release=$(make -s kernelrelease)
strip --strip-all -o vmlinux.stripped vmlinux

mkdir -p "$cache/$key.tmp"
cp vmlinux.stripped "$cache/$key.tmp/vmlinux"
echo "$release $key" > "$cache/$key.tmp/vmlinux.version"
cp .config "$cache/$key.tmp/config"
# System.map names the addresses initcall_debug and oops messages print.
cp System.map "$cache/$key.tmp/System.map"
rm -rf "$cache/$key" && mv "$cache/$key.tmp" "$cache/$key"
cp "$cache/$key/vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
cp "$cache/$key/vmlinux.version" "$out/vmlinux.version"
echo "kernel: built $(cat "$out/vmlinux.version")"
