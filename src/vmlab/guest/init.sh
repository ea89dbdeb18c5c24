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

read -r cmdline </proc/cmdline
case " $cmdline " in
*" vmlab.probe=1 "*)
	# The accel probe: proves that the guest runs, then powers off at once.
	echo "vmlab-probe: ok" >/dev/console
	$BB poweroff -f
	;;
esac

# All modules in one modprobe, not an insmod each (a fork each). It looks in
# /lib/modules/RELEASE, where the initramfs has them flat, with a
# modules.dep that lists them without dependencies: they load in order.
read -r release </proc/sys/kernel/osrelease
$BB ln -s . "/lib/modules/$release"
modules=
while read -r module; do
	modules="$modules ${module%.ko}"
done </modules.order
$BB modprobe -a $modules || fail "cannot load the modules:$modules"

# Find the virtio-serial ports by name (/dev/vport0pN): they appear, and get
# their names, asynchronously after virtio_console loads. Builtins only here:
# a fork costs ~5 ms under TCG. The agent gets the paths in its environment.
find_ports() {
	local port name
	for port in /sys/class/virtio-ports/*; do
		read -r name <"$port/name" 2>/dev/null && [ -c "/dev/${port##*/}" ] || continue
		case $name in
		vmlab.ctl) VMLAB_CTL=/dev/${port##*/} ;;
		vmlab.sys) VMLAB_SYS=/dev/${port##*/} ;;
		vmlab.out) VMLAB_OUT=/dev/${port##*/} ;;
		vmlab.err) VMLAB_ERR=/dev/${port##*/} ;;
		vmlab.in) VMLAB_IN=/dev/${port##*/} ;;
		esac
	done
	[ -n "$VMLAB_CTL" ] && [ -n "$VMLAB_SYS" ] && [ -n "$VMLAB_OUT" ] &&
		[ -n "$VMLAB_ERR" ] && [ -n "$VMLAB_IN" ]
}
n=0
until find_ports; do
	n=$((n + 1))
	[ $n -gt 5000 ] && fail "virtio-serial ports did not appear"
	$BB usleep 1000
done
export VMLAB_SYS VMLAB_OUT VMLAB_ERR VMLAB_IN
exec 3<>"$VMLAB_CTL"

# /lower, /rw and /newroot come with the initramfs. /rw holds the overlay's
# upper layer and the new root's /run, where the agent lives.
$BB mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
	fail "cannot mount the host root over 9p"
$BB mount -t tmpfs -o mode=0755 rw /rw
$BB mkdir -p /rw/upper /rw/work /rw/run/vmlab /dev/pts /dev/shm
$BB mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "cannot mount the overlay on the host root"

$BB cp /agent.sh /rw/run/vmlab/
# busybox itself is bind-mounted, not copied: the agent then runs the very
# pages init ran, whose code TCG has already translated (a copy's code is
# translated anew: ~0.1 s more until the first command ends).
# (No page-cache warming of libc and friends either: measured, it costs
# more boot time than it saves on the first command.)
: >/rw/run/vmlab/busybox

# The host's own /proc, /sys, /dev, /run and /tmp show through 9p: cover them,
# all in one mount -a (each mount(8) would be a fork).
printf '%s\n' \
	"/proc /newroot/proc none move 0 0" \
	"/sys /newroot/sys none move 0 0" \
	"/dev /newroot/dev none move 0 0" \
	"devpts /newroot/dev/pts devpts gid=5,mode=620,ptmxmode=666 0 0" \
	"shm /newroot/dev/shm tmpfs mode=1777 0 0" \
	"/rw/run /newroot/run none bind 0 0" \
	"/bin/busybox /newroot/run/vmlab/busybox none bind 0 0" \
	"tmp /newroot/tmp tmpfs mode=1777 0 0" >/fstab
$BB mount -a -T /fstab || fail "cannot mount the guest's /proc, /sys, /dev, /run and /tmp"
$BB mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null

# Until the port's "host connected" event arrives, reads see EOF: retry.
n=0
until IFS=' ' read -r verb payload <&3; do
	n=$((n + 1))
	[ $n -gt 5000 ] && fail "no boot script from the host"
	$BB usleep 1000
done
[ "$verb" = boot ] || fail "expected a boot script, got '$verb'"

$BB base64 -d >/boot.sh <<EOF || fail "cannot decode the boot script"
$payload
EOF
. /boot.sh

exec $BB switch_root /newroot /run/vmlab/busybox sh /run/vmlab/agent.sh
