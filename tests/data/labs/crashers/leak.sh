#!/bin/sh
# usage: leak.sh KIB [LIMIT_KIB]
# Leaks KIB KiB through crashers (0: nothing) and fails when unreclaimable slab
# (SUnreclaim in /proc/meminfo, where kmalloc memory shows) grew by more than
# LIMIT_KIB (default 1024) meanwhile: a leak check that can fail, and pass.
set -eu
kib=${1:?usage: leak.sh KIB [LIMIT_KIB]}
limit=${2:-1024}
meminfo() { awk -v key="$1:" '$1 == key { print $2 }' /proc/meminfo; }
slab_before=$(meminfo SUnreclaim)
avail_before=$(meminfo MemAvailable)
if [ "$kib" -gt 0 ]; then
	echo "$kib" >/sys/kernel/debug/crashers/leak
fi
slab_after=$(meminfo SUnreclaim)
avail_after=$(meminfo MemAvailable)
grew=$((slab_after - slab_before))
echo "SUnreclaim: $slab_before -> $slab_after KiB; MemAvailable: $avail_before -> $avail_after KiB"
if [ "$grew" -gt "$limit" ]; then
	echo "leak: unreclaimable slab grew by $grew KiB (limit $limit KiB)"
	exit 1
fi
echo "no leak: unreclaimable slab grew by $grew KiB (limit $limit KiB)"
