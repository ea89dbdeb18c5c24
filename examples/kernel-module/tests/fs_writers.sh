#!/bin/bash
# fs_writers.sh [WRITERS]: concurrent writers on tinyfs, verified by sha256, in TAP.
#
# WRITERS processes (default 8) run at once.  Each writes FILES files
# (default 4) of SIZE_KIB KiB (default 512) of random data into a directory
# of its own in 16 KiB writes, creates and renames entries in one directory
# that all share, and appends APPENDS lines (default 200) to one log that all
# share (O_APPEND).  Then: one result per writer (its files match the sha256
# of what it wrote), the shared directory, the shared log (every line whole,
# each writer's lines in order), the same after umount and mount, the module's
# node count, and a clean kernel log.
set -u
. "$(dirname "$0")/lib.sh"

WRITERS=${1:-8}
FILES=${FILES:-4}
SIZE_KIB=${SIZE_KIB:-512}
APPENDS=${APPENDS:-200}

[ "$(id -u)" = 0 ] || bail_out "needs root"
kmsg_mark writers	# the kernel log is checked from here on
tinyfs_ready || bail_out "cannot load and mount tinyfs at $MNT"
W=$MNT/writers.$$
T=$(mktemp -d)
mkdir "$W" "$W/shared" || bail_out "cannot mkdir $W"
nodes0=$(counter nodes)
trap 'cd /; rm -rf "$W" "$T" 2>/dev/null' EXIT

tap_begin tap $((WRITERS + 5)) "tinyfs filesystem/concurrent-writers: $WRITERS writers on $(nproc) CPUs in $W"

writer() {
	local w=$1 f i src dst
	mkdir "$W/w$w" || return 1
	for ((f = 1; f <= FILES; f++)); do
		src=$T/w$w.f$f
		dst=$W/w$w/f$f
		head -c "${SIZE_KIB}K" /dev/urandom >"$src" || return 1
		dd if="$src" of="$dst" bs=16k status=none || return 1
		echo "$(sha256sum <"$src" | cut -d' ' -f1)  $dst" >>"$T/w$w.sums"
		: >"$W/shared/w$w-f$f" && mv "$W/shared/w$w-f$f" "$W/shared/w$w-f$f.done" || return 1
	done
	# one write(2) per line, 32 bytes each: O_APPEND must keep them whole
	for ((i = 1; i <= APPENDS; i++)); do
		printf 'writer %03d line %06d ........\n' "$w" "$i" >>"$W/shared.log" || return 1
	done
}

t0=$(now_us)
declare -A pids
for ((w = 1; w <= WRITERS; w++)); do
	writer "$w" >"$T/w$w.out" 2>&1 &
	pids[$w]=$!
done
for ((w = 1; w <= WRITERS; w++)); do
	wait "${pids[$w]}"
	echo $? >"$T/w$w.status"
done
elapsed_ms=$(ms_since "$t0")

t_writer() {
	local w=$1
	cat "$T/w$w.out"
	expect_eq "writer exit status" 0 "$(<"$T/w$w.status")" &&
		expect_eq "files" "$FILES" "$(wc -l <"$T/w$w.sums")" &&
		sha256sum --quiet -c "$T/w$w.sums"
}
for ((w = 1; w <= WRITERS; w++)); do
	out=$(t_writer "$w" 2>&1)
	status=$?
	result $status "writer_$w" "$FILES files of $SIZE_KIB KiB, sha256 verified"
	[ $status = 0 ] || diag "$out"
done
metric writers_elapsed_ms "$elapsed_ms" ms

t_shared_dir() {
	expect_eq "entries" $((WRITERS * FILES)) "$(ls "$W/shared" | wc -l)" &&
		expect_eq "renamed entries" $((WRITERS * FILES)) "$(ls "$W/shared" | grep -c '\.done$')"
}
t_shared_log() {
	local log=$W/shared.log w
	expect_eq "lines" $((WRITERS * APPENDS)) "$(wc -l <"$log")" || return 1
	expect_eq "size" $((WRITERS * APPENDS * 32)) "$(stat -c %s "$log")" || return 1
	expect_eq "torn lines" 0 "$(grep -cvE '^writer [0-9]{3} line [0-9]{6} \.{8}$' "$log")" || return 1
	for ((w = 1; w <= WRITERS; w++)); do
		expect_eq "writer $w's lines, in order" "$(seq -f 'line %06g' "$APPENDS" | sha256sum)" \
			"$(grep "^writer $(printf %03d "$w") " "$log" | cut -d' ' -f3-4 | sha256sum)" || return 1
	done
}
t_after_remount() {
	cat "$T"/w*.sums >"$T/all.sums"
	sha256sum <"$W/shared.log" >"$T/log.sum"
	umount "$MNT" && mount -t tinyfs none "$MNT" || return 1
	sha256sum --quiet -c "$T/all.sums" &&
		expect_eq "shared log" "$(<"$T/log.sum")" "$(sha256sum <"$W/shared.log")"
}
t_nodes() {
	# per writer: its directory, its files and its shared entries; and the log
	expect_eq nodes $((nodes0 + WRITERS * (1 + 2 * FILES) + 1)) "$(counter nodes)"
}
t_clean_log() {
	local bad
	bad=$(kernel_log_since_mark | grep -E "$KERNEL_TROUBLE")
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}
check shared_directory t_shared_dir
check shared_log_appends_whole t_shared_log
check verified_after_remount t_after_remount
check node_count t_nodes
check clean_kernel_log t_clean_log

tap_end
