#!/usr/bin/env bash
# Build the test cluster's binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, metrics-server) from the Go modules pinned in infra/kube/go/ into .cache/kube/bin.
# Needs Go 1.24+ (`go` on PATH or /usr/local/go/bin/go) and the Go module proxy.
# Idempotent: a second run compares stamps and builds nothing (under a second). Cold: about 8 minutes on
# 2 cores and 4 to 6 GB of Go caches in .cache/kube/go (docs/BENCHMARKS.md), which may be deleted after.
#
# Usage: .ci/install_kube.sh            (VENV=path picks another virtualenv; default .venv)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

[[ -x "$PY" ]] || { printf '[install_kube] no virtualenv at %s (run: make venv)\n' "$VENV" >&2; exit 1; }
nice -n 10 "$PY" -m infra.kube.build
