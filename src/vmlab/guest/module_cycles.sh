#!/bin/sh
# vmlab's module load/unload cycle check (a suite's `module_cycles`), run in the guest.
#   module_cycles.sh MODULE CYCLES TOLERANCE_KIB [PARAM=VALUE...]
# MODULE is a .ko path (insmod/rmmod) or a module name (modprobe/modprobe -r);
# the PARAMs are given to every load.
# Prints TAP: the cycles succeed, unreclaimable slab does not grow by more than
# TOLERANCE_KIB across them (counted after a first, warm-up cycle), and the
# module is gone at the end. A module that leaks on every load fails the second.
set -u
module=$1 cycles=$2 tolerance=$3
shift 3
case $module in
*.ko | */*)
	name=$(basename "$module" .ko | tr - _)
	load() { insmod "$module" "$@"; }
	;;
*)
	name=$(echo "$module" | tr - _)
	load() { modprobe "$module" "$@"; }
	;;
esac
unload() { rmmod "$name"; }
loaded() { grep -q "^$name " /proc/modules; }
slab() { awk '$1 == "SUnreclaim:" { print $2 }' /proc/meminfo; }
settle() { sync; echo 2 >/proc/sys/vm/drop_caches; sleep 1; }

echo "TAP version 13"
echo "1..3"
if loaded && ! unload; then
	echo "Bail out! $name is loaded and cannot be unloaded before the check"
	exit 1
fi
if ! { load "$@" && unload; }; then
	echo "Bail out! the first load/unload cycle of $module failed"
	exit 1
fi
settle
before=$(slab)
failed=""
i=2
while [ "$i" -le "$cycles" ]; do
	if ! load "$@"; then failed="load $i"; break; fi
	if ! unload; then failed="unload $i"; break; fi
	i=$((i + 1))
done
if [ -z "$failed" ]; then
	echo "ok 1 - cycles"
else
	echo "not ok 1 - cycles"
	echo "# $failed of $cycles failed"
fi
settle
after=$(slab)
growth=$((after - before))
if [ "$growth" -le "$tolerance" ]; then
	echo "ok 2 - slab_growth"
else
	echo "not ok 2 - slab_growth"
	echo "# $name leaks: unreclaimable slab grew by $growth KiB over $((cycles - 1)) cycles"
fi
echo "# unreclaimable slab: $before -> $after KiB (tolerance $tolerance KiB)"
echo "# metric slab_unreclaimable_growth_kib=$growth KiB"
if loaded; then
	echo "not ok 3 - unloaded"
	echo "# $name is still loaded"
else
	echo "ok 3 - unloaded"
fi
