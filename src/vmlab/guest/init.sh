#!/bin/sh
# vmlab guest init: PID 1 of the host-root initramfs (busybox sh).
#
# Loads the modules listed in /modules.order, mounts the host's root read-only
# over 9p with a tmpfs overlay on top, reads the boot script the host sends on
# the vmlab.ctl port (shares, hostname), then switches root and execs the agent.
# Anything that goes wrong prints one `vmlab-init: ...` line on the console and
# powers off, so the host reports a boot error with that line.
export PATH=/bin
BB=/bin/busybox

fail() {
	echo "vmlab-init: $*" >/dev/console
	$BB poweroff -f
	exit 1
}

# vmlab.net: the boot script calls `vmlab_nic MAC ADDRESS/PREFIX` for each NIC
# on a private network (virtio_net is in /modules.order then); the interface
# is the one with that MAC. /sys has moved to /newroot/sys by then.
vmlab_nic() {
	local n=0 dev
	while :; do
		for dev in /newroot/sys/class/net/*; do
			[ "$($BB cat "$dev/address" 2>/dev/null)" = "$1" ] || continue
			$BB ip addr add "$2" dev "${dev##*/}" && $BB ip link set "${dev##*/}" up && return 0
			fail "cannot configure ${dev##*/} ($1) as $2"
		done
		n=$((n + 1))
		[ $n -gt 500 ] && fail "no network interface with MAC $1"
		$BB usleep 10000
	done
}

$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
$BB mount -t devtmpfs devtmpfs /dev
# The kernel booted with loglevel=6 (no boot chatter on the slow UART); from here
# on the console shows info too, which SysRq dumps (t, w) print at.
echo 7 >/proc/sys/kernel/printk

case " $($BB cat /proc/cmdline) " in
*" vmlab.probe=1 "*)
	# The accel probe: proves that the guest runs, then powers off at once.
	echo "vmlab-probe: ok" >/dev/console
	$BB poweroff -f
	;;
esac

while read -r module; do
	$BB insmod "/lib/modules/$module" || fail "insmod $module failed"
done </modules.order

# Name the virtio-serial ports: /dev/vport0pN -> /dev/port.NAME. The ports
# appear asynchronously after virtio_console loads.
n=0
while [ ! -e /sys/class/virtio-ports ] || [ "$($BB ls /sys/class/virtio-ports | $BB wc -l)" -lt 5 ]; do
	n=$((n + 1))
	[ $n -gt 5000 ] && fail "virtio-serial ports did not appear"
	$BB usleep 1000
done
for port in /sys/class/virtio-ports/*; do
	$BB ln -s "${port##*/}" "/dev/port.$($BB cat "$port/name")"
done
exec 3<>/dev/port.vmlab.ctl

$BB mkdir -p /lower /rw /newroot
$BB mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
	fail "cannot mount the host root over 9p"
$BB mount -t tmpfs -o mode=0755 rw /rw
$BB mkdir /rw/upper /rw/work
$BB mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "cannot mount the overlay on the host root"

# Warm the page cache with what nearly every command maps, in the background:
# a plain read of these files over 9p takes ~10 ms, while page faults on a
# cold mmap of them cost ~0.2 s on the first exec under TCG.
(
	for f in lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 usr/bin/env bin/sh \
		lib/x86_64-linux-gnu/libm.so.6 lib/x86_64-linux-gnu/libselinux.so.1 \
		lib/x86_64-linux-gnu/libpcre2-8.so.0; do
		$BB cat "/lower/$f" >/dev/null 2>&1
	done
) &

# The host's own /proc, /sys, /dev, /run and /tmp show through 9p: cover them.
for dir in proc sys dev; do
	$BB mount --move "/$dir" "/newroot/$dir" || fail "cannot move /$dir"
done
$BB mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null
$BB mkdir -p /newroot/dev/pts /newroot/dev/shm
$BB mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
$BB mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
$BB mount -t tmpfs -o mode=0755 run /newroot/run
$BB mount -t tmpfs -o mode=1777 tmp /newroot/tmp
$BB mkdir -p /newroot/run/vmlab
$BB cp /bin/busybox /agent.sh /newroot/run/vmlab/

# Until the port's "host connected" event arrives, reads see EOF: retry.
n=0
until IFS=' ' read -r verb payload <&3; do
	n=$((n + 1))
	[ $n -gt 5000 ] && fail "no boot script from the host"
	$BB usleep 1000
done
[ "$verb" = boot ] || fail "expected a boot script, got '$verb'"
echo "$payload" | $BB base64 -d >/boot.sh || fail "cannot decode the boot script"
. /boot.sh

exec $BB switch_root /newroot /run/vmlab/busybox sh /run/vmlab/agent.sh
