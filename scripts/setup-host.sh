#!/usr/bin/env bash
# Install the Debian packages vmlab needs, only those missing (apt-get update first).
# Run as root on Debian 12; prints what it does, exits non-zero with one line on failure.
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils
  python3-venv git make gcc libc6-dev
  postgresql
  genisoimage  # tests only: isoinfo reads back vmlab's cloud-init seed ISOs
  mmdebstrap e2fsprogs  # vmlab image build: the root filesystem, mkfs.ext4 -d (and debugfs)
  # tests only: the cloud image a user brings, made without mounts (tests/image/brought_image.py):
  # its MBR table (sfdisk), FAT boot partition (mkfs.vfat, mtools), bootloader (syslinux)
  fdisk dosfstools mtools syslinux
)

# A kernel with modules for the guests: the newest /boot/vmlinuz-* whose modules exist.
newest_kernel() {
  for image in /boot/vmlinuz-*; do
    [ -e "$image" ] || continue
    release=${image#/boot/vmlinuz-}
    [ -e "/lib/modules/$release/modules.dep" ] && echo "$release"
  done | sort -V | tail -n 1
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
release=$(newest_kernel)
[ -n "$release" ] || missing+=(linux-image-amd64)

install() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: missing Debian packages: $* (run 'make setup' as root, or apt-get install them)" >&2
    exit 3
  fi
  echo "setup-host: installing $*"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if [ ${#missing[@]} -gt 0 ]; then
  install "${missing[@]}"
  release=$(newest_kernel)
fi
[ -n "$release" ] || { echo "setup-host: no kernel with modules after installing linux-image-amd64" >&2; exit 3; }

# Headers of that kernel, to build out-of-tree modules for the guests.
if [ ! -e "/lib/modules/$release/build/Makefile" ]; then
  install "linux-headers-$release"
fi
