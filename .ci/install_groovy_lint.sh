#!/usr/bin/env bash
# Install npm-groovy-lint (CodeNarc; lints the Jenkinsfile offline) into .cache/npm-groovy-lint.
# Idempotent and quiet: a second run only checks. Needs Node 20 and Java 17 (both on this machine kind);
# 15.2.2 is the newest release that runs on Node 20 (16+ needs Node 22).
set -euo pipefail
STEP=install_groovy_lint
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

VERSION=15.2.2
PREFIX=.cache/npm-groovy-lint
BIN=$PREFIX/node_modules/.bin/npm-groovy-lint

for tool in node npm java; do
    command -v "$tool" >/dev/null || die "need $tool on PATH (npm-groovy-lint $VERSION runs on Node.js 20+ with npm, and Java 17+)"
done
if [[ -x $BIN ]] && grep -q "\"version\": \"$VERSION\"" "$PREFIX/node_modules/npm-groovy-lint/package.json"; then
    log "npm-groovy-lint $VERSION already installed"
    exit 0
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "npm-groovy-lint@$VERSION" >/dev/null
log "npm-groovy-lint $VERSION installed in $PREFIX"
