#!/usr/bin/env bash
# Install Ansible with the kubernetes.core collection, ansible-lint, kubernetes-validate and the
# Kubernetes client (for apply mode) into the project's virtualenv, for tests/test_playbooks.py.
# Idempotent and quiet: a second run only checks.
#
# Ansible Galaxy is not reachable from CI, so `ansible-galaxy collection install` cannot be used:
# the `ansible` package from PyPI (the full distribution) ships kubernetes.core, which is the only
# collection playbooks/requirements.yml names. kubernetes-validate carries the Kubernetes JSON
# schemas inside its wheel, so validation works offline.
#
# Usage: .ci/install_ansible.sh            (VENV=path picks another virtualenv; default .venv)
set -euo pipefail
STEP=install_ansible
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
REQUIREMENTS=("ansible>=12,<13" "ansible-lint>=25,<27" "kubernetes-validate>=1.34,<2" "kubernetes>=24.2")

start=$(date +%s)

[[ -x "$PY" ]] || { log "no virtualenv at $VENV (create it first: python3.11 -m venv $VENV)"; exit 1; }

# Installed and new enough? (Also proves kubernetes.core is importable where ansible-playbook looks.)
installed() {
    "$PY" - "${REQUIREMENTS[@]}" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
from importlib.util import find_spec
from packaging.requirements import Requirement

for spec in sys.argv[1:]:
    req = Requirement(spec)
    if not req.specifier.contains(version(req.name), prereleases=True):
        sys.exit(1)
sys.exit(0 if find_spec("ansible_collections.kubernetes.core") else 1)
PYEOF
}

if installed; then
    log "already installed"
else
    log "installing ${REQUIREMENTS[*]}"
    "$PY" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
    installed || { log "installed, but the versions or kubernetes.core are still not as required"; exit 1; }
fi

"$VENV/bin/ansible-galaxy" collection list kubernetes.core 2>/dev/null | grep -q '^kubernetes\.core ' \
    || { log "ansible-galaxy does not list kubernetes.core"; exit 1; }
summary=$("$PY" - <<'PYEOF'
import json
import pathlib
from importlib.metadata import version

import ansible_collections.kubernetes.core as k8s
from kubernetes_validate.utils import latest_version

manifest = json.loads((pathlib.Path(k8s.__path__[0]) / "MANIFEST.json").read_text())
print(f"ansible {version('ansible')} (core {version('ansible-core')}), "
      f"kubernetes.core {manifest['collection_info']['version']}, ansible-lint {version('ansible-lint')}, "
      f"kubernetes-validate {version('kubernetes-validate')} (schemas up to {latest_version()})")
PYEOF
)
log "$summary ready in $(($(date +%s) - start)) s"
