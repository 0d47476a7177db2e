#!/usr/bin/env bash
# Install Debian's Docker engine (docker.io) and debootstrap, and start dockerd if it is not running.
# Idempotent and quiet: a second run only checks. No systemd here, so dockerd runs in the background
# (log: /var/log/dockerd.log); it uses the kernel's overlay2 and iptables-nft as they are.
# Installing and starting need root (sudo is used where it works); a running engine needs nothing.
set -euo pipefail
STEP=install_docker
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start=$(date +%s)

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    need_apt "${missing[@]}"
    log "installing ${missing[*]}"
    as_root "installing ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root "installing ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" ca-certificates iptables >/dev/null
fi

# ok, denied (the engine runs but this user may not use its socket), or down.
engine_state() {
    local out
    if out=$(docker info 2>&1); then
        echo ok
    elif grep -qi 'permission denied' <<<"$out"; then
        echo denied
    else
        echo down
    fi
}

state=$(engine_state)
if [[ $state == down ]]; then
    log "starting dockerd"
    as_root "starting dockerd" sh -c 'setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &'
    for _ in $(seq 1 60); do
        state=$(engine_state)
        [[ $state == down ]] || break
        sleep 1
    done
fi
if [[ $state == denied ]]; then
    die "the Docker engine runs, but $(id -un) may not use it. Add the user to the docker group, log in again," \
        "then \`make test\` again: sudo usermod -aG docker $(id -un)"
fi
if [[ $state == down ]]; then
    log "dockerd did not come up in 60 s; its log ends with:"
    as_root "reading /var/log/dockerd.log" tail -20 /var/log/dockerd.log >&2
    exit 1
fi
log "docker $(docker version -f '{{.Server.Version}}') ready ($(docker info -f '{{.Driver}}')) in $(($(date +%s) - start)) s"
