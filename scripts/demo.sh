#!/usr/bin/env bash
# `make demo`: a short, real tour of `vmlab run` on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
vmlab=.venv/bin/vmlab
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step vmlab run -- uname -a
$vmlab run -- uname -a

step "vmlab run -- sh -c 'echo to stdout; echo to stderr >&2; exit 3'"
set +e
$vmlab run -- sh -c 'echo to stdout; echo to stderr >&2; exit 3'
echo "(exit status $?)"
set -e

step "echo 'hello from the host' | vmlab run -- tr a-z A-Z"
echo 'hello from the host' | $vmlab run -- tr a-z A-Z

step "vmlab run -- sh -c 'echo guest > /etc/vmlab-demo; cat /etc/vmlab-demo'   # the host root is read-only + overlay"
$vmlab run -- sh -c 'echo guest > /etc/vmlab-demo; cat /etc/vmlab-demo'
test ! -e /etc/vmlab-demo && echo "(/etc/vmlab-demo does not exist on the host)"

step "vmlab run --timeout 2 -- sleep 60"
set +e
$vmlab run --timeout 2 -- sleep 60
echo "(exit status $?)"
step "vmlab run -- sh -c 'echo c > /proc/sysrq-trigger'   # a kernel panic"
$vmlab run -- sh -c 'echo c > /proc/sysrq-trigger'
echo "(exit status $?)"
set -e
printf '\nDemo done: every command above ran in its own disposable VM.\n'
