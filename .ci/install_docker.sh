#!/usr/bin/env bash
# Install Debian's Docker engine (docker.io) and debootstrap, and start dockerd if it is not running.
# Idempotent and quiet: a second run only checks. No systemd here, so dockerd runs in the background
# (log: /var/log/dockerd.log); it uses the kernel's overlay2 and iptables-nft as they are.
set -euo pipefail

log() { printf '[install_docker] %s\n' "$*" >&2; }
start=$(date +%s)

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" ca-certificates iptables >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        log "dockerd did not come up in 60 s; its log ends with:"
        tail -20 /var/log/dockerd.log >&2
        exit 1
    fi
fi
log "docker $(docker version -f '{{.Server.Version}}') ready ($(docker info -f '{{.Driver}}')) in $(($(date +%s) - start)) s"
