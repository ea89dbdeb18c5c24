#!/bin/sh
# posix.sh VERSION MOUNTPOINT: mount the server's export over NFS VERSION (hard),
# run the POSIX checks on it (TAP on stdout), unmount.
set -eu
version=$1
mnt=$2
here=$(dirname "$0")
mkdir -p "$mnt"
mount -t nfs -o "vers=$version,hard,timeo=50" server:/srv/nfs "$mnt"
trap 'cd /; umount "$mnt" || umount -l "$mnt"' EXIT
work="$mnt/run-$version-$$"
mkdir -p "$work"
python3 "$here/posix_checks.py" "$work"
rm -rf "$work"
