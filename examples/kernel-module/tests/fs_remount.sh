#!/bin/bash
# fs_remount.sh: tinyfs keeps its files across umount and mount, in TAP.
#
# tinyfs is in memory, but its files belong to the module, not to a mount: a
# tree written, unmounted and mounted again must come back the same, byte for
# byte and attribute for attribute (type, inode number, mode, owner, size,
# mtime, sha256).  Checks too that umount lets go of the superblock and all
# its inodes, that two mounts share one superblock, and that a read-only
# remount refuses writes.  Leaves $MNT mounted (or not) as it found it.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || bail_out "needs root"
was_mounted=0
is_loaded && is_mounted "$MNT" && was_mounted=1
tinyfs_ready || bail_out "cannot load and mount tinyfs at $MNT"
[ "$(findmnt -n -t tinyfs | wc -l)" = 1 ] || bail_out "tinyfs is mounted elsewhere too: $(findmnt -n -t tinyfs -o TARGET | xargs)"
W=$MNT/remount.$$
M2=$MNT-second
T=$(mktemp -d)
mkdir -p "$M2" "$W" || bail_out "cannot mkdir $W"
nodes0=$(counter nodes)
cleanup() {
	cd /
	{
		is_mounted "$M2" && umount "$M2"
		is_mounted "$MNT" || mount -t tinyfs none "$MNT"
		rm -rf "$W" "$T"
		[ $was_mounted = 1 ] || umount "$MNT"
	} >/dev/null 2>&1
}
trap cleanup EXIT

tap_begin tap 9 "tinyfs filesystem/remount in $W"

t_populate() {
	cd "$W" && mkdir -p a/b/c empty || return 1
	: >zero && head -c 1 /dev/urandom >one && head -c 4095 /dev/urandom >a/page-1 &&
		head -c 4096 /dev/urandom >a/page && head -c 4097 /dev/urandom >a/b/page+1 &&
		head -c 1048579 /dev/urandom >a/b/c/mib+3 && head -c 3M /dev/urandom >three-mib || return 1
	printf 'sparse' | dd of=holey bs=1 seek=100000 status=none || return 1
	chmod 600 one && chmod 755 a/b && chmod 444 a/page && chown 1000:100 a/page-1 || return 1
	touch -m -d @1000000000.123456789 three-mib || return 1
	manifest "$W" >"$T/before" && [ -s "$T/before" ]
}
t_umount_releases() {
	local nodes
	nodes=$(counter nodes)
	umount "$MNT" || return 1
	expect_eq "superblocks vfs_inodes refcnt" "0 0 0" \
		"$(counter superblocks) $(counter vfs_inodes) $(refcnt)" &&
		expect_eq "nodes (files stay in the module)" "$nodes" "$(counter nodes)"
}
same_as() {	# same_as MANIFEST [DIR]: the tree in DIR (default $W) matches
	manifest "${2:-$W}" >"$T/now" || return 1
	diff -u "$1" "$T/now" >"$T/diff" && return 0
	echo "the tree differs from $1:"
	head -n 40 "$T/diff"
	return 1
}
t_same_after_remount() {
	mount -t tinyfs none "$MNT" || return 1
	same_as "$T/before"
}
t_changes_survive_remount() {
	cd "$W" && mv a/b z && rm one && echo more >>zero && truncate -s 100 three-mib &&
		chmod 700 empty && mkdir empty/new || return 1
	manifest "$W" >"$T/changed" || return 1
	cd / && umount "$MNT" && mount -t tinyfs none "$MNT" || return 1
	same_as "$T/changed"
}
t_second_mount_shares_sb() {
	mount -t tinyfs none "$M2" || return 1
	expect_eq superblocks 1 "$(counter superblocks)" || return 1
	same_as "$T/changed" "$M2/${W#"$MNT"/}" || return 1
	echo through-second >"$M2/${W#"$MNT"/}/written-via-second" || return 1
	expect_eq "seen through the first mount" through-second "$(<"$W/written-via-second")"
}
t_umount_second_keeps_first() {
	umount "$M2" || return 1
	expect_eq superblocks 1 "$(counter superblocks)" &&
		expect_eq "still readable" through-second "$(<"$W/written-via-second")"
}
t_read_only_remount() {
	local err status=0
	mount -o remount,ro "$MNT" || return 1
	if err=$(sh -c "echo x >'$W/ro-file'" 2>&1); then
		echo "a write succeeded on a read-only mount"
		status=1
	elif ! grep -q "Read-only" <<<"$err"; then
		echo "unexpected error: $err"
		status=1
	fi
	mount -o remount,rw "$MNT" || return 1
	[ $status = 0 ] && echo rw-again >"$W/rw-file" && expect_eq content rw-again "$(<"$W/rw-file")"
}
t_delete_survives_remount() {
	rm -r "$W" || return 1
	umount "$MNT" && mount -t tinyfs none "$MNT" || return 1
	[ ! -e "$W" ] || { echo "$W is back after remount"; return 1; }
	expect_eq nodes $((nodes0 - 1)) "$(counter nodes)"
}
t_inodes_bounded() {
	# a mounted tree that nobody looks at holds only the root's inode
	umount "$MNT" && mount -t tinyfs none "$MNT" || return 1
	expect_eq vfs_inodes 1 "$(counter vfs_inodes)"
}

check populate t_populate
check umount_releases_superblock_and_inodes t_umount_releases
check same_tree_after_remount t_same_after_remount
check changes_survive_remount t_changes_survive_remount
check second_mount_shares_superblock t_second_mount_shares_sb
check umount_second_keeps_first t_umount_second_keeps_first
check read_only_remount t_read_only_remount
check delete_survives_remount t_delete_survives_remount
check only_root_inode_after_fresh_mount t_inodes_bounded

tap_end
