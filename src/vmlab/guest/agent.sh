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
# fd 3 (vmlab.ctl) is inherited from init.
BB=/run/vmlab/busybox
RUN=/run/vmlab
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

exec 4<>/dev/port.vmlab.sys 5>/dev/port.vmlab.out 6>/dev/port.vmlab.err </dev/null

# Wait until the host holds the stdin port open, so the job never reads a
# premature EOF (the open event and the run request travel different queues).
wait_stdin() {
	f=/sys/kernel/debug/virtio-ports/$($BB readlink /dev/port.vmlab.in)
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
		pid=$($BB cat "$RUN/job.pid" 2>/dev/null) && $BB kill -KILL "-$pid" 2>/dev/null
		echo "killed $arg" >&4
		;;
	esac
done 3>&- 5>&- 6>&- &

echo ready >&3
while IFS=' ' read -r verb nonce stdin job <&3; do
	case "$verb" in
	run)
		echo "$job" | $BB base64 -d >"$RUN/job" 2>/dev/null
		$BB rm -f "$RUN/why"
		if [ "$stdin" = 1 ]; then
			wait_stdin
			exec 7</dev/port.vmlab.in
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
		$BB rm -f "$RUN/job.pid"
		$BB printf '%s' "$nonce" >&5
		$BB printf '%s' "$nonce" >&6
		echo "done $nonce $status $($BB cat "$RUN/why" 2>/dev/null)" >&3
		;;
	poweroff)
		$BB sync
		$BB poweroff -f
		;;
	esac
done
# The host hung up: nothing more will come.
$BB poweroff -f
