#!/bin/bash
# kmod.sh [CYCLES]: the kernel_module suite of the tinyfs lab, in KTAP.
#
#   1 modinfo           the built module is GPL and made for the running kernel
#   2 refcount          (nested) module and superblock references: load, mount,
#                       a second mount sharing the superblock, rmmod refused while
#                       mounted, a lazily unmounted open file, umount, rmmod, and
#                       a reload that starts empty
#   3 cycles            (nested) CYCLES load/mount/write/remount/umount/unload
#                       cycles, each timed, each checking refcnt and counters
#   4 cycle_timing      median and mean load and unload times, as metrics
#   5 memory            MemAvailable and unreclaimable slab after the first cycle
#                       and after the last, within a tolerance: a module that
#                       leaks its data or its nodes fails here
#   6 clean_kernel_log  no warning, BUG or oops in the kernel log since the start
#
# Runs as root in a guest where tinyfs is not loaded; leaves it unloaded.
# Environment: MEM_TOLERANCE_KIB (default 4096), SLAB_TOLERANCE_KIB (256),
# MIB_PER_CYCLE (2) and FILES_PER_CYCLE (500): what each cycle leaves in the
# module for rmmod to free, 38 MiB and ~10000 nodes over 20 cycles.  Noise
# measured under TCG with 512M: MemAvailable within 1.2 MiB, SUnreclaim within
# 40 KiB (counting from after the first cycle, which grows caches by ~300 KiB).
set -u
. "$(dirname "$0")/lib.sh"

CYCLES=${1:-20}
MEM_TOLERANCE_KIB=${MEM_TOLERANCE_KIB:-4096}
SLAB_TOLERANCE_KIB=${SLAB_TOLERANCE_KIB:-256}
MIB_PER_CYCLE=${MIB_PER_CYCLE:-2}
FILES_PER_CYCLE=${FILES_PER_CYCLE:-500}
A=/mnt/tinyfs-kmod-a
B=/mnt/tinyfs-kmod-b

[ "$(id -u)" = 0 ] || bail_out "needs root"
[ -f "$KO" ] || bail_out "no $KO: build the module first (make)"
if is_loaded; then
	umount -q -t tinyfs -a
	rmmod tinyfs || bail_out "tinyfs is already loaded and cannot be unloaded"
fi
mkdir -p "$A" "$B"
cleanup() {
	{ is_mounted "$B" && umount "$B"; is_mounted "$A" && umount "$A"; is_loaded && rmmod tinyfs; } >/dev/null 2>&1
}
trap cleanup EXIT
kmsg_mark kmod

tap_begin ktap 6 "tinyfs kernel_module: $CYCLES load/unload cycles on $(uname -r)"

# --- 1 ---
t_modinfo() {
	expect_eq license GPL "$(modinfo -F license "$KO")" &&
		expect_eq "vermagic release" "$(uname -r)" \
			"$(modinfo -F vermagic "$KO" | cut -d' ' -f1)"
}
check modinfo t_modinfo

# --- 2 ---
t_loads() {
	load_module || return 1
	grep -qw tinyfs /proc/filesystems || { echo "tinyfs not in /proc/filesystems"; return 1; }
	expect_eq refcnt 0 "$(refcnt)" &&
		expect_eq counters "nodes=1 vfs_inodes=0 superblocks=0 data_bytes=0" "$(counters)"
}
t_mount_takes_ref() {
	mount -t tinyfs none "$A" || return 1
	expect_eq refcnt 1 "$(refcnt)" && expect_eq superblocks 1 "$(counter superblocks)"
}
t_second_mount_shares_sb() {
	mount -t tinyfs none "$B" || return 1
	echo hello >"$A/f" || return 1
	expect_eq "content through the second mount" hello "$(cat "$B/f")" &&
		expect_eq "inode number" "$(stat -c %i "$A/f")" "$(stat -c %i "$B/f")" &&
		expect_eq refcnt 1 "$(refcnt)" && expect_eq superblocks 1 "$(counter superblocks)"
}
t_rmmod_busy() {
	local err
	if err=$(rmmod tinyfs 2>&1); then
		echo "rmmod succeeded while mounted"
		return 1
	fi
	echo "$err" | grep -q "in use" || { echo "unexpected rmmod error: $err"; return 1; }
	is_loaded && expect_eq refcnt 1 "$(refcnt)"
}
t_lazy_umount_open_file() {
	local r
	umount "$B" || return 1
	exec 3<"$A/f"
	umount -l "$A" || return 1
	r=$(refcnt)
	expect_eq "refcnt with a file open after umount -l" 1 "$r" || { exec 3<&-; return 1; }
	expect_eq "read through the open file" hello "$(cat <&3)" || { exec 3<&-; return 1; }
	exec 3<&-
	expect_eq "refcnt after close" 0 "$(refcnt)" &&
		expect_eq counters "nodes=2 vfs_inodes=0 superblocks=0 data_bytes=4096" "$(counters)"
}
t_unloads() {
	rmmod tinyfs || return 1
	! is_loaded || { echo "/sys/module/tinyfs still there"; return 1; }
}
t_reload_starts_empty() {
	load_module && mount -t tinyfs none "$A" || return 1
	expect_eq "entries after reload" "" "$(ls -A "$A")" || return 1
	umount "$A" && rmmod tinyfs
}
subtest_begin refcount 7
check loads t_loads
check mount_takes_ref t_mount_takes_ref
check second_mount_shares_sb t_second_mount_shares_sb
check rmmod_refused_while_mounted t_rmmod_busy
check lazy_umount_open_file_holds_ref t_lazy_umount_open_file
check unloads t_unloads
check reload_starts_empty t_reload_starts_empty
subtest_end refcount

# --- 3, 4 and 5 ---
# One cycle: load, mount, write a directory of files, remount and verify,
# umount, check that the superblock and its inodes are gone, unload.  The
# files stay in the module until rmmod, which must free them.
cycle() {
	local t0 load_ms work_ms unload_ms sum j
	t0=$(now_us)
	load_module || return 1
	load_ms=$(ms_since "$t0")
	t0=$(now_us)
	mount -t tinyfs none "$A" && mkdir "$A/d" || return 1
	head -c "${MIB_PER_CYCLE}M" /dev/urandom >"$A/d/data" || return 1
	for ((j = 1; j <= FILES_PER_CYCLE; j++)); do
		echo "$j" >"$A/d/small$j" || return 1	# builtins only: no fork
	done
	sum=$(sha256sum <"$A/d/data")
	umount "$A" && mount -t tinyfs none "$A" || return 1
	expect_eq "sha256 after remount" "$sum" "$(sha256sum <"$A/d/data")" || return 1
	expect_eq "entries after remount" "$((FILES_PER_CYCLE + 1))" "$(ls "$A/d" | wc -l)" || return 1
	expect_eq "small$FILES_PER_CYCLE after remount" "$FILES_PER_CYCLE" \
		"$(<"$A/d/small$FILES_PER_CYCLE")" || return 1
	umount "$A" || return 1
	work_ms=$(ms_since "$t0")
	expect_eq refcnt 0 "$(refcnt)" || return 1
	expect_eq "vfs_inodes superblocks nodes" "0 0 $((FILES_PER_CYCLE + 3))" \
		"$(counter vfs_inodes) $(counter superblocks) $(counter nodes)" || return 1
	t0=$(now_us)
	rmmod tinyfs || return 1
	unload_ms=$(ms_since "$t0")
	echo "load $load_ms ms, mount+write+remount+umount $work_ms ms, unload $unload_ms ms"
	echo "$load_ms $unload_ms" >>"$TIMES"
}

TIMES=$(mktemp)
subtest_begin cycles "$CYCLES"
for i in $(seq "$CYCLES"); do
	out=$(cycle 2>&1)
	status=$?
	if [ $status = 0 ]; then
		result 0 "cycle_$i" "$out"
	else
		result 1 "cycle_$i"
		diag "$out"
		{ is_mounted "$A" && umount "$A"; is_loaded && rmmod tinyfs; } >/dev/null 2>&1
	fi
	if [ "$i" = 1 ]; then
		# the first cycle warms the caches up: memory counts from here
		settle_memory
		mem0=$(meminfo_kib MemAvailable)
		slab0=$(meminfo_kib Slab)
		unrec0=$(meminfo_kib SUnreclaim)
	fi
done
subtest_end cycles
# Timing gets a result of its own: metrics belong to a leaf result line.
median_of() { cut -d' ' -f"$1" "$TIMES" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mean_of() { awk -v f="$1" '{ s += $f } END { printf "%.1f", s / NR }' "$TIMES"; }
if [ -s "$TIMES" ]; then
	# KTAP: diagnostics come before the result line they belong to.
	metric load_ms_median "$(median_of 1)" ms
	metric unload_ms_median "$(median_of 2)" ms
	metric load_ms_mean "$(mean_of 1)" ms
	metric unload_ms_mean "$(mean_of 2)" ms
	result 0 cycle_timing "$(wc -l <"$TIMES") cycles: median load $(median_of 1) ms, unload $(median_of 2) ms"
else
	result 1 cycle_timing "no cycle completed"
fi
rm -f "$TIMES"

settle_memory
mem1=$(meminfo_kib MemAvailable)
slab1=$(meminfo_kib Slab)
unrec1=$(meminfo_kib SUnreclaim)
mem_lost=$((mem0 - mem1))
slab_grown=$((slab1 - slab0))
unrec_grown=$((unrec1 - unrec0))
t_memory() {
	echo "MemAvailable $mem0 -> $mem1 kB (lost $mem_lost, tolerance $MEM_TOLERANCE_KIB);" \
		"SUnreclaim $unrec0 -> $unrec1 kB (grew $unrec_grown, tolerance $SLAB_TOLERANCE_KIB);" \
		"Slab $slab0 -> $slab1 kB"
	[ "$mem_lost" -le "$MEM_TOLERANCE_KIB" ] && [ "$unrec_grown" -le "$SLAB_TOLERANCE_KIB" ]
}
out=$(t_memory)
status=$?
metric mem_available_lost_kib "$mem_lost" KiB
metric slab_unreclaimable_grown_kib "$unrec_grown" KiB
metric slab_grown_kib "$slab_grown" KiB
result $status memory "$out"

# --- 6 ---
t_clean_log() {
	local log bad
	log=$(kernel_log_since_mark)
	bad=$(grep -E "$KERNEL_TROUBLE" <<<"$log")
	[ -z "$bad" ] && return 0
	echo "$bad"
	return 1
}
check clean_kernel_log t_clean_log

tap_end
