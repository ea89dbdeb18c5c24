#!/bin/bash
# fs_basic.sh: create, read, update and delete on tinyfs, in TAP.
#
# Files (create, write, overwrite, append, truncate, sparse writes, the size
# limit, a file read after its unlink), renames (in a directory, over a file, across directories,
# of a directory), directories (mkdir, rmdir, ENOTEMPTY, link counts, a big
# listing), attributes, and what tinyfs refuses (special files, links).
# Works in a directory of its own under $MNT (default /mnt/tinyfs), loading
# and mounting tinyfs first if the machine's setup did not; removes it after.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || bail_out "needs root"
tinyfs_ready || bail_out "cannot load and mount tinyfs at $MNT"
W=$MNT/basic.$$
mkdir "$W" || bail_out "cannot mkdir $W"
cd "$W" || bail_out "cannot cd $W"
nodes0=$(counter nodes)
T=$(mktemp -d)
trap 'cd /; rm -rf "$W" "$T" 2>/dev/null' EXIT

tap_begin tap 23 "tinyfs filesystem/basic in $W"

t_mounted() {
	expect_eq "filesystem type" tinyfs "$(findmnt -n -o FSTYPE "$MNT")" &&
		expect_eq "statfs magic" 54494e59 "$(stat -f -c %t "$MNT")"
}
t_create_empty() {
	: >empty || return 1
	expect_eq "type and size" "regular empty file 0" "$(stat -c '%F %s' empty)"
}
t_write_read() {
	printf 'hello tinyfs\n' >f || return 1
	expect_eq content "hello tinyfs" "$(<f)" && expect_eq size 13 "$(stat -c %s f)"
}
t_overwrite_in_place() {
	printf 'HELLO' | dd of=f conv=notrunc status=none || return 1
	expect_eq content "HELLO tinyfs" "$(<f)" && expect_eq size 13 "$(stat -c %s f)"
}
t_append() {
	printf 'line 2\n' >>f || return 1
	expect_eq content "$(printf 'HELLO tinyfs\nline 2')" "$(<f)"
}
t_truncate_shrink() {
	truncate -s 5 f || return 1
	expect_eq content HELLO "$(<f)" && expect_eq size 5 "$(stat -c %s f)"
}
t_truncate_extend_zero_fills() {
	truncate -s 4100 f || return 1
	expect_eq size 4100 "$(stat -c %s f)" &&
		expect_eq "non-zero bytes past the old end" 0 "$(tail -c 4095 f | tr -d '\0' | wc -c)"
}
t_open_trunc() {
	echo new >f || return 1
	expect_eq content new "$(<f)" && expect_eq size 4 "$(stat -c %s f)"
}
t_sparse_write() {
	printf 'end' | dd of=sparse bs=1 seek=1048576 status=none || return 1
	expect_eq size 1048579 "$(stat -c %s sparse)" &&
		expect_eq "non-zero bytes in the hole" 0 "$(head -c 1048576 sparse | tr -d '\0' | wc -c)" &&
		expect_eq tail end "$(tail -c 3 sparse)"
}
t_size_limit() {
	local max err
	max=$(($(counter max_file_mb) << 20))
	if err=$(dd if=/dev/zero of=huge bs=1 count=1 seek="$max" status=none 2>&1); then
		echo "a write at byte $max (max_file_mb) succeeded"
		return 1
	fi
	grep -q "File too large" <<<"$err" || { echo "unexpected error: $err"; return 1; }
	rm huge
}
t_big_file_sha256() {
	head -c 8M /dev/urandom >"$T/big" && cp "$T/big" big || return 1
	expect_eq sha256 "$(sha256sum <"$T/big")" "$(sha256sum <big)" &&
		expect_eq size 8388608 "$(stat -c %s big)"
}
t_unlink() {
	local before
	before=$(counter nodes)
	rm big || return 1
	[ ! -e big ] || { echo "big still exists"; return 1; }
	expect_eq "nodes after unlink" $((before - 1)) "$(counter nodes)"
}
t_read_after_unlink() {
	local before
	echo still-here >doomed && before=$(counter nodes) || return 1
	exec 4<doomed
	rm doomed || return 1
	expect_eq "nodes while open" "$before" "$(counter nodes)" &&
		expect_eq "read through the open descriptor" still-here "$(cat <&4)"
	local status=$?
	exec 4<&-
	[ $status = 0 ] && expect_eq "nodes after close" $((before - 1)) "$(counter nodes)"
}
t_rename_same_dir() {
	echo a >a && mv a b || return 1
	[ ! -e a ] && expect_eq content a "$(<b)"
}
t_rename_over_file() {
	local before
	echo c >c && before=$(counter nodes) && mv c b || return 1
	[ ! -e c ] && expect_eq content c "$(<b)" &&
		expect_eq "nodes (the replaced file is gone)" $((before - 1)) "$(counter nodes)"
}
t_rename_across_dirs() {
	mkdir d1 d2 && echo x >d1/x && mv d1/x d2/y || return 1
	[ ! -e d1/x ] && expect_eq content x "$(<d2/y)"
}
t_rename_dir() {
	mkdir d1/sub && echo deep >d1/sub/file && mv d1/sub d2/sub || return 1
	expect_eq content deep "$(<d2/sub/file)" &&
		expect_eq "link counts of d1 and d2" "2 3" "$(stat -c %h d1 d2 | xargs)"
}
t_mkdir_rmdir() {
	local n
	n=$(stat -c %h .)
	mkdir e || return 1
	expect_eq "parent links after mkdir" $((n + 1)) "$(stat -c %h .)" || return 1
	expect_eq "new directory" "directory 2" "$(stat -c '%F %h' e)" || return 1
	rmdir e && expect_eq "parent links after rmdir" "$n" "$(stat -c %h .)"
}
t_rmdir_not_empty() {
	local err
	if err=$(rmdir d2 2>&1); then
		echo "rmdir of a non-empty directory succeeded"
		return 1
	fi
	grep -q "not empty" <<<"$err" || { echo "unexpected error: $err"; return 1; }
	if err=$(mv -T d1 d2 2>&1); then
		echo "rename over a non-empty directory succeeded"
		return 1
	fi
	grep -q "not empty" <<<"$err" || { echo "unexpected error: $err"; return 1; }
}
t_readdir_many() {
	local i
	mkdir many || return 1
	for ((i = 0; i < 1000; i++)); do : >"many/file$i" || return 1; done
	expect_eq "entries listed" 1000 "$(ls many | wc -l)" &&
		expect_eq "distinct names" 1000 "$(ls many | sort -u | wc -l)" &&
		expect_eq "find sees them" 1001 "$(find many | wc -l)" &&
		rm -r many
}
t_attributes() {
	echo x >attr && chmod 640 attr && chown 1000:1000 attr &&
		touch -m -d @981173106.789 attr || return 1
	expect_eq "mode owner mtime" "640 1000:1000 981173106.789000000" "$(stat -c '%a %u:%g %.9Y' attr)"
}
t_refuses_special_files() {
	local what
	for what in "mkfifo fifo" "mknod node c 1 3" "ln -s b symlink" "ln b hardlink"; do
		if $what 2>/dev/null; then
			echo "'$what' succeeded; tinyfs has only regular files and directories"
			return 1
		fi
	done
}
t_cleanup() {
	rm -r "$W" || return 1
	expect_eq "nodes after removing everything" $((nodes0 - 1)) "$(counter nodes)"
}

check mounted t_mounted
check create_empty t_create_empty
check write_read t_write_read
check overwrite_in_place t_overwrite_in_place
check append t_append
check truncate_shrink t_truncate_shrink
check truncate_extend_zero_fills t_truncate_extend_zero_fills
check open_with_truncate t_open_trunc
check sparse_write t_sparse_write
check size_limit t_size_limit
check big_file_sha256 t_big_file_sha256
check unlink t_unlink
check read_after_unlink t_read_after_unlink
check rename_same_dir t_rename_same_dir
check rename_over_file t_rename_over_file
check rename_across_dirs t_rename_across_dirs
check rename_dir t_rename_dir
check mkdir_rmdir t_mkdir_rmdir
check rmdir_not_empty t_rmdir_not_empty
check readdir_1000 t_readdir_many
check attributes t_attributes
check refuses_special_files t_refuses_special_files
cd /	# a cwd in $W would keep its (unlinked) node alive
check cleanup t_cleanup

tap_end
