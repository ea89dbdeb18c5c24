#!/bin/sh
# Record one real console log: boot the Debian kernel under QEMU (TCG) with an
# initramfs holding busybox, crashmod.ko and ./init, and crash it as asked.
#   usage: record.sh OUT.log KERNEL INITRD "cm=<scenario> [kernel args]"
# Scenarios: see init and crashmod.c (warn bug null gpf pagefault divide ud2 atomic
# softlockup rcu hung list refcount doublefree redzone smash killinit sysrq).
# Build the module with: make -C /lib/modules/$(uname -r)/build M=$PWD modules
set -eu
out=$1 kernel=$2 initrd=$3 args=$4
timeout "${TMO:-240}" qemu-system-x86_64 -machine q35,accel=tcg -m 512 -smp 2 -nographic \
  -no-reboot -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 $args" \
  -serial "file:$out" -monitor none -display none || true
