#!/bin/sh
# An ordinary test between the triggers: crashers is loaded with its triggers
# in place, and this kernel has neither died (taint D: an oops) nor locked up
# (taint L: a soft lockup). W (a warning) and U (set by the `taint` test) may
# linger in the VM that the safe tests share; O and E come with the module.
set -eu
grep -q '^crashers ' /proc/modules || { echo "crashers is not loaded"; exit 1; }
for trigger in warn bug null softlockup hung leak; do
	[ -e "/sys/kernel/debug/crashers/$trigger" ] || { echo "no trigger $trigger"; exit 1; }
done
tainted=$(cat /proc/sys/kernel/tainted)
if [ $((tainted & (128 | 16384))) -ne 0 ]; then
	echo "kernel died or locked up in this VM: tainted=$tainted"
	exit 1
fi
echo "ok: crashers loaded, tainted=$tainted"
