# shellcheck shell=bash
# Shared by the install steps of `make prereqs`: log lines, and getting root for the parts that need it.
# Source it first thing (before any cd), after setting STEP:
#     STEP=install_docker
#     # shellcheck source=lib.sh
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Root comes from being root, or from sudo (without a password, or with one typed at a terminal).
# Where neither works, the step stops with the one command to run as root; `make test` then fails there.

SCRIPT_PATH=$(realpath "$0")

log() { printf '[%s] %s\n' "${STEP:-install}" "$*" >&2; }
die() { log "$@"; exit 1; }

# Sets ROOT to the prefix that runs a command as root here (empty for root, `sudo` where it works);
# returns 1 when there is none.
root_prefix() {
    ROOT=()
    ((EUID == 0)) && return 0
    if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
        ROOT=(sudo)
        return 0
    fi
    return 1
}

refuse_without_root() {
    local what=$1 command=$2
    log "$what needs root, and $(id -un) is not root and cannot use sudo. Run this as root, then \`make test\` again:"
    log "    $command"
    exit 1
}

# as_root WHAT CMD...: run CMD as root, or stop naming what needed it and the command to run as root
# (ROOT_HINT if set, else this whole script).
as_root() {
    local what=$1
    shift
    root_prefix || refuse_without_root "$what" "${ROOT_HINT:-bash $SCRIPT_PATH}"
    "${ROOT[@]}" "$@"
}

# become_root WHAT "$@": re-run this whole script as root (under sudo, keeping the PIP_* and named
# variables), or stop with the command to run as root. A no-op for root.
become_root() {
    local what=$1
    shift
    ((EUID == 0)) && return 0
    local shown="bash $SCRIPT_PATH${*:+ $*}"
    root_prefix || refuse_without_root "$what" "$shown"
    local keep=()
    while IFS= read -r assignment; do keep+=("$assignment"); done \
        < <(env | grep -E "^(PIP_[A-Z_]+|${KEEP_ENV:-DEBIAN_FRONTEND})=" || true)
    log "$what needs root: running this step again under sudo"
    exec sudo env "${keep[@]}" bash "$SCRIPT_PATH" "$@"
}

# need_apt PACKAGE...: stop with a clear message where there is no apt-get to install them with.
need_apt() {
    command -v apt-get >/dev/null 2>&1 \
        || die "no apt-get here to install $*: install them with this system's package manager, then \`make test\` again"
}
