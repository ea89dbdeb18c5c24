# shellcheck shell=bash
# lib.sh: what the tinyfs test scripts share.  Sourced by bash scripts that run
# as root inside a vmlab guest (the host's root read-only, the lab directory
# shared read-write at its own path).
#
# Output: TAP version 13 or KTAP version 1, one result per check.
#   tap_begin tap|ktap PLAN [DESCRIPTION]
#   result 0|1 NAME [COMMENT]      "ok N - NAME # COMMENT" (TAP) / "ok N NAME" (KTAP)
#   check NAME CMD...             runs CMD; its output becomes diagnostics if it fails
#   subtest_begin NAME PLAN       opens a nested KTAP block (indented 4 spaces)
#   subtest_end NAME [COMMENT]    closes it with one result: ok if all inside passed
#   diag MSG                      "# MSG" at the current depth
#   metric NAME VALUE UNIT        "# metric NAME=VALUE UNIT": after its result in TAP, before it in KTAP
#   tap_end                       exits 0 if every result passed, else 1

LAB=${LAB:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
KO=${TINYFS_KO:-$LAB/module/tinyfs.ko}
MNT=${MNT:-/mnt/tinyfs}
PARAMS=/sys/module/tinyfs/parameters
PYTHON=${PYTHON:-/usr/bin/python3}	# not a pyenv shim: 0.4 s to start under TCG, not 3 s

_fmt=tap
_depth=0
_count=(0)
_failed=(0)

_indent() { printf '%*s' $((4 * _depth)) ''; }

tap_begin() {
	_fmt=$1
	if [ "$_fmt" = ktap ]; then echo "KTAP version 1"; else echo "TAP version 13"; fi
	[ -n "${3:-}" ] && echo "# $3"
	echo "1..$2"
}

diag() {
	local line
	while IFS= read -r line; do echo "$(_indent)# $line"; done <<<"$*"
}

metric() { echo "$(_indent)# metric $1=$2 $3"; }

result() {
	local status=$1 name=$2 comment=${3:-} word=ok sep=" - "
	_count[_depth]=$((_count[_depth] + 1))
	if [ "$status" != 0 ]; then
		word="not ok"
		_failed[_depth]=$((_failed[_depth] + 1))
	fi
	[ "$_fmt" = ktap ] && sep=" "
	echo "$(_indent)$word ${_count[_depth]}$sep$name${comment:+ # $comment}"
}

# check NAME CMD...: one result from CMD's exit status; prints CMD's output
# (stdout and stderr, last 30 lines) as diagnostics when it fails.
check() {
	local name=$1 out status
	shift
	out=$("$@" 2>&1)
	status=$?
	result "$status" "$name"
	if [ "$status" != 0 ]; then
		[ -n "$out" ] && diag "$(tail -n 30 <<<"$out")"
		diag "exit status $status: $*"
	fi
	return "$status"
}

subtest_begin() {
	_depth=$((_depth + 1))
	_count[_depth]=0
	_failed[_depth]=0
	echo "$(_indent)KTAP version 1"
	echo "$(_indent)# Subtest: $1"
	echo "$(_indent)1..$2"
}

subtest_end() {
	local failed=${_failed[_depth]}
	_depth=$((_depth - 1))
	result "$([ "$failed" = 0 ] && echo 0 || echo 1)" "$1" "${2:-}"
}

tap_end() {
	[ "${_failed[0]}" = 0 ]
	exit $?
}

# Fails the script before any result, the TAP way.
bail_out() {
	echo "Bail out! $*"
	exit 2
}

# --- assertions that print what they saw; use them inside check functions ---

expect_eq() {	# expect_eq WHAT EXPECTED ACTUAL
	[ "$2" = "$3" ] && return 0
	echo "$1: expected '$2', got '$3'"
	return 1
}

# --- the module ---

counter() { cat "$PARAMS/$1"; }
refcnt() { cat /sys/module/tinyfs/refcnt; }
is_loaded() { [ -d /sys/module/tinyfs ]; }
is_mounted() { findmnt -n -t tinyfs "$1" >/dev/null; }
counters() {
	echo "nodes=$(counter nodes) vfs_inodes=$(counter vfs_inodes)" \
		"superblocks=$(counter superblocks) data_bytes=$(counter data_bytes)"
}

load_module() {
	[ -f "$KO" ] || { echo "no $KO: build it first (make)"; return 1; }
	insmod "$KO" "$@"
}

# Loads the module and mounts it at $MNT unless that is done already.
tinyfs_ready() {
	is_loaded || load_module || return 1
	mkdir -p "$MNT"
	is_mounted "$MNT" || mount -t tinyfs none "$MNT"
}

# --- measurements ---

now_us() { echo "${EPOCHREALTIME/./}"; }	# no fork: cheap under TCG

# ms_since START_US -> elapsed milliseconds with one decimal
ms_since() {
	local d=$(($(now_us) - $1))
	printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# Settles caches so that memory readings compare: reclaims page cache,
# dentries and inodes, and lets RCU-freed and vfree'd memory go.
settle_memory() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 0.5
	echo 3 >/proc/sys/vm/drop_caches
}

# --- files ---

# manifest DIR: one line per entry (type, inode, mode, owner, size, mtime) and the
# sha256 of each file, sorted: equal manifests mean equal trees.
manifest() {
	(cd "$1" && find . -mindepth 1 -printf '%p %y %i %m %U:%G %s %T@\n' | LC_ALL=C sort &&
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

# A marker in the kernel log; kernel_log_since prints what came after it.
kmsg_mark() {
	_kmsg_mark="vmlab-test: $1 $$ $(now_us)"
	echo "$_kmsg_mark" >/dev/kmsg
}

kernel_log_since_mark() {
	dmesg | awk -v m="$_kmsg_mark" 'found { print } index($0, m) { found = 1 }'
}

# Lines of a kernel log that mean trouble.  Loading an out-of-tree, unsigned
# module taints the kernel on purpose; that is not trouble.
KERNEL_TROUBLE='WARNING:|BUG:|Oops|general protection fault|Call Trace|kernel BUG|UBSAN|KASAN|list_(add|del) corruption|refcount_t:|INFO: task .* blocked|soft lockup|hard LOCKUP|RCU stall|leaked|VFS: Busy inodes'
