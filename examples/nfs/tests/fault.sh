#!/bin/sh
# fault.sh restart|link: client I/O over an NFSv4.2 hard mount through a fault.
set -eu
fault=$1
mnt=/mnt/fault-$fault
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$mnt"
mount -t nfs -o vers=4.2,hard,timeo=50 server:/srv/nfs "$mnt"
trap 'cd /; umount "$mnt" || umount -l "$mnt"' EXIT
python3 "$here/io_under_fault.py" "$fault" "$mnt"
