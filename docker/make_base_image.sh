#!/usr/bin/env bash
# Build the local base image (Debian bookworm + Python 3.11) with debootstrap and `docker import`.
# For machines that reach a Debian mirror and PyPI but no image registry: the image trusts the
# host's CA bundle and carries the host's pip settings, so `pip install` inside `docker build`
# reaches PyPI exactly as the host does. Skips the work when the tag already exists.
#
# Usage: docker/make_base_image.sh [TAG]        (default: vqa-base:bookworm; FORCE=1 rebuilds)
# Env:   DEBIAN_MIRROR (default: the host's configured Debian mirror), SUITE (default: bookworm)
# Needs root (debootstrap, chroot): sudo is used where it works; else it stops with the command to run.
set -euo pipefail
STEP=make_base_image
# shellcheck source=SCRIPTDIR/../.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/lib.sh"

TAG="${1:-vqa-base:bookworm}"
SUITE="${SUITE:-bookworm}"
DOCKER="${DOCKER:-docker}"

if [[ "${FORCE:-0}" != 1 ]] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists; skipping (FORCE=1 rebuilds)"
    exit 0
fi
KEEP_ENV="DEBIAN_MIRROR|SUITE|DOCKER|FORCE" become_root "building the base image $TAG with debootstrap" "$@"
command -v debootstrap >/dev/null || die "debootstrap is missing: run .ci/install_docker.sh"

# The mirror apt already uses here: deb822 sources first, then one-line sources.
host_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? +bookworm' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1; exit}' || true)
    fi
    echo "$uri"
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
[[ -n "$MIRROR" ]] || { log "no Debian mirror in /etc/apt/sources.list*: set DEBIAN_MIRROR"; exit 1; }
SECURITY_MIRROR="${MIRROR%/debian}/debian-security"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

start=$(date +%s)
root=$(mktemp -d /var/tmp/vqa-base.XXXXXX)
chmod 0755 "$root"   # apt's _apt user must be able to enter it
steps_log="$root.log"
cleanup() { rm -rf "$root" "$steps_log"; }
trap cleanup EXIT
fail() { log "$1; its log ends with:"; tail -30 "$steps_log" >&2; exit 1; }

log "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >"$steps_log" 2>&1 || fail "debootstrap failed"
log "debootstrap took $(($(date +%s) - start)) s"

# Same suites the host uses, so `apt-get` in a derived image works; then take pending security fixes.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
# The host's mirror can be a dated snapshot whose Release files are past their Valid-Until.
printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99snapshot"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" sh -ec 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq
                       apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/info/*
                       find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name "en*" -exec rm -rf {} +' \
    >>"$steps_log" 2>&1 || fail "apt-get upgrade in the image failed"
: >"$root/etc/resolv.conf"   # docker writes its own at run time

# Trust what the host trusts (its bundle may hold a CA that PyPI's traffic is re-signed with).
cp "$CA_BUNDLE" "$root$CA_BUNDLE"
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$root/etc/pip.conf"

# The host's PIP_* settings from the environment, as image ENV. PIP_FIND_LINKS names a host folder
# that a build cannot see, so it stays behind.
changes=(
    --change "ENV SSL_CERT_FILE=$CA_BUNDLE"
    --change "ENV REQUESTS_CA_BUNDLE=$CA_BUNDLE"
    --change "ENV PIP_CERT=$CA_BUNDLE"
    --change "ENV LANG=C.UTF-8"
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --change 'CMD ["python3"]'
    --change "LABEL org.opencontainers.image.title=vqa-base org.opencontainers.image.base.name=debian:$SUITE"
    --change "LABEL org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
)
while IFS='=' read -r name value; do
    case "$name" in PIP_CERT | PIP_FIND_LINKS | PIP_INDEX_URL | PIP_EXTRA_INDEX_URL | PIP_TRUSTED_HOST) continue ;; esac
    changes+=(--change "ENV $name=$value")
done < <(env | grep -E '^PIP_[A-Z_]+=' | grep -vE '(PASSWORD|TOKEN|AUTH)' || true)

log "importing as $TAG"
tar -C "$root" --numeric-owner -c . | "$DOCKER" import "${changes[@]}" - "$TAG" >/dev/null
"$DOCKER" run --rm "$TAG" python3 -c 'import ssl, sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'
size=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
log "built $TAG: $((size / 1024 / 1024)) MiB in $(($(date +%s) - start)) s"
