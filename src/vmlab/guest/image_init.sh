#!/bin/sh
# vmlab guest init for disk-image machines: PID 1 of their tiny initramfs.
#
# Loads the modules listed in /modules.order (virtio PCI and block, ext4, the
# NIC), mounts the image's root filesystem (vmlab.root=, default /dev/vda) and
# the kernel's modules disk if there is one (kernel = "host"), and hands over
# to the image's own init (systemd). It replaces the distribution's initrd,
# which costs seconds of udev under TCG. Anything that goes wrong prints one
# `vmlab-init: ...` line on the console and powers off.
export PATH=/bin
BB=/bin/busybox

fail() {
	echo "vmlab-init: $*" >/dev/console
	$BB poweroff -f
	exit 1
}

$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
$BB mount -t devtmpfs devtmpfs /dev
echo 7 >/proc/sys/kernel/printk

root=/dev/vda
init=/sbin/init
for arg in $($BB cat /proc/cmdline); do
	case $arg in
	vmlab.root=*) root=${arg#vmlab.root=} ;;
	vmlab.init=*) init=${arg#vmlab.init=} ;;
	esac
done

# All modules in one modprobe, as in init.sh (see there).
read -r release </proc/sys/kernel/osrelease
$BB ln -s . "/lib/modules/$release"
modules=
while read -r module; do
	modules="$modules ${module%.ko}"
done </modules.order
$BB modprobe -a $modules || fail "cannot load the modules:$modules"

case $root in
LABEL=* | UUID=*) ;;
*)
	n=0
	until [ -b "$root" ]; do
		n=$((n + 1))
		[ $n -gt 10000 ] && fail "the root disk $root did not appear"
		$BB usleep 1000
	done
	;;
esac
$BB mkdir -p /newroot
# busybox mount resolves LABEL= and UUID= itself, and tries each filesystem type.
$BB mount -o rw "$root" /newroot || fail "cannot mount the root filesystem $root"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "the image has no $init"

# kernel = "host": the image has no modules for this kernel; they come on a
# read-only disk (serial vmlab-modules, see machine/modules_disk.py) and appear
# read-only at /lib/modules/RELEASE in the image, for modprobe, udev, cloud-init.
for serial in /sys/block/vd*/serial; do
	[ -e "$serial" ] || continue
	read -r name <"$serial"
	[ "$name" = vmlab-modules ] || continue
	disk=/dev/${serial#/sys/block/}
	disk=${disk%/serial}
	lib=/newroot/lib
	[ -L $lib ] && lib=/newroot/usr/lib # merged /usr: lib -> usr/lib
	$BB mkdir -p "$lib/modules/$release" || fail "cannot make $lib/modules/$release"
	$BB mount -t ext4 -o ro "$disk" "$lib/modules/$release" ||
		fail "cannot mount the kernel's modules ($disk)"
done

$BB umount /proc /sys
$BB mount --move /dev /newroot/dev || fail "cannot move /dev"
exec $BB switch_root /newroot "$init"
