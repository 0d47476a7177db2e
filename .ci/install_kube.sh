#!/usr/bin/env bash
# Build the test cluster's binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, metrics-server) from the Go modules pinned in infra/kube/go/ into .cache/kube/bin.
# Needs Go 1.24+ (`go` on PATH, or /usr/local/go/bin/go) and the Go module proxy.
# Idempotent: a second run compares stamps and builds nothing (well under a second). Cold: 12 to 30
# minutes on 2 cores (idle to busy; about 22 CPU-minutes) and 5.5 GB of Go caches in .cache/kube/go,
# which may be deleted afterwards (docs/BENCHMARKS.md).
#
# Usage: .ci/install_kube.sh            (VENV=path picks another virtualenv; default .venv)
set -euo pipefail
STEP=install_kube
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || die "no virtualenv at $VENV (run: make venv)"
nice -n 10 "$PY" -m infra.kube.build || die "the control plane build failed (its error is above)"
