#!/usr/bin/env bash
# `make demo`: a short, real tour. Two commands in throwaway VMs, then the
# example kernel-module lab's level 1 end to end (build, load/unload cycles,
# filesystem tests), with its reports.
set -euo pipefail
cd "$(dirname "$0")/.."
vmlab=$PWD/.venv/bin/vmlab
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step vmlab run -- uname -a
$vmlab run -- uname -a

step "echo 'hello from the host' | vmlab run -- tr a-z A-Z"
echo 'hello from the host' | $vmlab run -- tr a-z A-Z

# The lab builds its module inside the guest: work on a copy, keep the tree clean.
work=$(mktemp -d /tmp/vmlab-demo-XXXXXX)
trap 'rm -rf "$work/lab"' EXIT
cp -r examples/kernel-module "$work/lab"
cd "$work"
step "vmlab test examples/kernel-module --level 1    # (a copy, in $work)"
set +e
$vmlab test lab --level 1
status=$?
set -e
step "vmlab show latest"
$vmlab show latest | head -20 || true
printf '\nReports: %s/.vmlab/runs/ (junit.xml, results.json, console and output logs);\n' "$work"
printf 'results store: %s/.vmlab/results.db (vmlab runs, vmlab show RUN).\n' "$work"
exit $status
