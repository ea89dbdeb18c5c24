#!/run/vmlab/busybox sh
# vmlab guest agent: PID 1 after switch_root, run by busybox sh from a tmpfs.
#
# Protocol (one line each way; see vmlab/guest/serial.py for the host side):
#   vmlab.ctl  host -> guest  run NONCE STDIN JOB_BASE64   run a job script
#                             poweroff                     sync and power off
#              guest -> host  ready                        agent is up
#                             started NONCE                stdin is open: EOF is safe
#                             done NONCE STATUS [WHY]      job finished
#   vmlab.sys  host -> guest  ping N | sysrq LETTERS | kill NONCE
#              guest -> host  pong N | sysrq-ok LETTERS | killed NONCE
#   vmlab.out / vmlab.err     the job's stdout / stderr, each closed by NONCE
#   vmlab.in                  the job's stdin when STDIN=1 (EOF: host hangs up)
# Builtins wherever they do (read, printf, kill, : >file): a fork costs ~5 ms
# under TCG. fd 3 (vmlab.ctl) is inherited from init, the other ports' paths come in
# VMLAB_SYS, VMLAB_OUT, VMLAB_ERR and VMLAB_IN.
BB=/run/vmlab/busybox
RUN=/run/vmlab
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

exec 4<>"$VMLAB_SYS" 5>"$VMLAB_OUT" 6>"$VMLAB_ERR" </dev/null

# Wait until the host holds the stdin port open, so the job never reads a
# premature EOF (the open event and the run request travel different queues).
wait_stdin() {
	f=/sys/kernel/debug/virtio-ports/${VMLAB_IN##*/}
	[ -r "$f" ] || return 0
	i=0
	while [ $i -lt 1000 ]; do
		while IFS=': ' read -r key value; do
			[ "$key" = host_connected ] && [ "$value" = 1 ] && return 0
		done <"$f"
		i=$((i + 1))
		$BB usleep 1000
	done
}

# The control loop: answers pings and sysrq requests while a job runs.
while IFS=' ' read -r verb arg <&4; do
	case "$verb" in
	ping) echo "pong $arg" >&4 ;;
	sysrq)
		for letter in $($BB echo "$arg" | $BB sed 's/./& /g'); do
			echo "$letter" >/proc/sysrq-trigger
		done
		echo "sysrq-ok $arg" >&4
		;;
	kill)
		read -r pid <"$RUN/job.pid" 2>/dev/null && [ -n "$pid" ] && kill -KILL "-$pid" 2>/dev/null
		echo "killed $arg" >&4
		;;
	esac
done 3>&- 5>&- 6>&- &

echo ready >&3
while IFS=' ' read -r verb nonce stdin job <&3; do
	case "$verb" in
	run)
		$BB base64 -d >"$RUN/job" 2>/dev/null <<EOF
$job
EOF
		: >"$RUN/why"
		if [ "$stdin" = 1 ]; then
			wait_stdin
			exec 7<"$VMLAB_IN"
		else
			exec 7</dev/null
		fi
		# The host may hang up the stdin port (EOF) only after this line.
		echo "started $nonce" >&3
		$BB setsid $BB sh "$RUN/job" <&7 >&5 2>&6 3>&- 4>&- 5>&- 6>&- 7<&- &
		echo $! >"$RUN/job.pid"
		exec 7<&-
		wait $!
		status=$?
		: >"$RUN/job.pid"
		printf '%s' "$nonce" >&5
		printf '%s' "$nonce" >&6
		why=
		read -r why <"$RUN/why"
		echo "done $nonce $status $why" >&3
		;;
	poweroff)
		$BB sync
		$BB poweroff -f
		;;
	esac
done
# The host hung up: nothing more will come.
$BB poweroff -f
