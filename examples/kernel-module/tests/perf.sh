#!/bin/bash
# perf.sh: tinyfs throughput and metadata operations per second, in TAP, with
# tmpfs measured the same way as the baseline.
#
# Each measurement (tests/perf_io.py) runs REPEAT times (default 3) and
# reports the median as "# metric NAME=VALUE UNIT" lines under its test line.
# A test fails when the operations fail or the data read back is wrong, never
# on speed alone: comparing speed with earlier runs is the lab's job.
#
#   MIB (default 64)      size of the file written and read
#   FILES (default 2000)  files created, stat'ed and unlinked
set -u
. "$(dirname "$0")/lib.sh"

MIB=${MIB:-64}
FILES=${FILES:-2000}
REPEAT=${REPEAT:-3}

[ "$(id -u)" = 0 ] || bail_out "needs root"
tinyfs_ready || bail_out "cannot load and mount tinyfs at $MNT"
[ -x "$PYTHON" ] || bail_out "no $PYTHON"
W=$MNT/perf.$$
BASE=$(mktemp -d)	# the baseline: /tmp in a vmlab guest is tmpfs
mkdir "$W" || bail_out "cannot mkdir $W"
trap 'cd /; rm -rf "$W" "$BASE" 2>/dev/null' EXIT
[ "$(stat -f -c %T "$BASE")" = tmpfs ] || bail_out "$BASE is not on tmpfs"

tap_begin tap 6 "tinyfs performance: $MIB MiB, $FILES files, median of $REPEAT, $(nproc) CPUs"

# throughput DIR: MB/s writing and reading MIB MiB of random data in 1 MiB
# calls, checked when read back.  metadata DIR: creates, stats and unlinks of
# FILES files per second.  One Python process each, so that no fork is timed.
throughput() { "$PYTHON" "$(dirname "$0")/perf_io.py" throughput "$1" "$MIB" "$REPEAT"; }
metadata() { "$PYTHON" "$(dirname "$0")/perf_io.py" metadata "$1" "$FILES" "$REPEAT"; }

run_measure() {	# run_measure NAME FUNCTION DIR: one result; sets $values
	local out status
	out=$("$2" "$3" 2>&1)
	status=$?
	values=$(tail -n 1 <<<"$out")
	result $status "$1"
	[ $status = 0 ] || { diag "$out"; values=""; }
	return $status
}

values=""
run_measure write_read_throughput throughput "$W" &&
	read -r tw tr <<<"$values" &&
	metric write_MBps "$tw" MB/s && metric read_MBps "$tr" MB/s
run_measure tmpfs_throughput_baseline throughput "$BASE" &&
	read -r bw br <<<"$values" &&
	metric tmpfs_write_MBps "$bw" MB/s && metric tmpfs_read_MBps "$br" MB/s
run_measure metadata_ops metadata "$W" &&
	read -r mc ms mu ma <<<"$values" &&
	metric create_per_s "$mc" ops/s && metric stat_per_s "$ms" ops/s &&
	metric unlink_per_s "$mu" ops/s && metric metadata_ops_per_s "$ma" ops/s
run_measure tmpfs_metadata_baseline metadata "$BASE" &&
	read -r _ _ _ ba <<<"$values" &&
	metric tmpfs_metadata_ops_per_s "$ba" ops/s

# Ratios to tmpfs, which runs on the same (virtual) hardware: steadier than
# the raw numbers from one host to another.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
if [ -n "${tw:-}" ] && [ -n "${bw:-}" ]; then
	result 0 throughput_vs_tmpfs
	metric write_vs_tmpfs "$(ratio "$tw" "$bw")" ratio
	metric read_vs_tmpfs "$(ratio "$tr" "$br")" ratio
else
	result 1 throughput_vs_tmpfs "a measurement failed"
fi
if [ -n "${ma:-}" ] && [ -n "${ba:-}" ]; then
	result 0 metadata_vs_tmpfs
	metric metadata_vs_tmpfs "$(ratio "$ma" "$ba")" ratio
else
	result 1 metadata_vs_tmpfs "a measurement failed"
fi

tap_end
