#!/bin/sh
# Init-container entrypoint of the model image: copy the weights baked into this image into a
# shared volume (default /models), then exit. Layout written, as Dockerfile.app expects it:
#   <target>/base/                  the base model (VQA_MODEL_DIR)
#   <target>/adapters/<version>/    the LoRA adapter, if the image has one
#   <target>/adapters/CURRENT       names that adapter (VQA_ADAPTERS_DIR's pointer)
#   <target>/MODEL_IMAGE            the versions this image carried
# Each part is copied beside its final name and renamed into place, so a reader never sees half a model.
set -eu

target="${1:-/models}"
payload=/payload
log() { echo "[model-init] $*" >&2; }

if [ ! -d "$target" ] || [ ! -w "$target" ]; then
    log "target $target is not a writable directory (mount a volume there, writable by uid $(id -u))"
    exit 1
fi
if [ ! -f "$payload/base/config.json" ]; then
    log "this image has no base model at $payload/base (built with the wrong MODEL_SRC?)"
    exit 1
fi

# Copy $1 to $2 through a temporary sibling, replacing $2 whole.
install_dir() {
    tmp="$2.incoming.$$"
    rm -rf "$tmp"
    cp -R "$1" "$tmp"
    rm -rf "$2.old.$$"
    if [ -e "$2" ]; then mv "$2" "$2.old.$$"; fi
    mv "$tmp" "$2"
    rm -rf "$2.old.$$"
}

install_dir "$payload/base" "$target/base"
mkdir -p "$target/adapters"
if [ -f "$payload/adapter/adapter_config.json" ]; then
    install_dir "$payload/adapter" "$target/adapters/$ADAPTER_VERSION"
    printf '%s\n' "$ADAPTER_VERSION" >"$target/adapters/.CURRENT.$$"
    mv "$target/adapters/.CURRENT.$$" "$target/adapters/CURRENT"
    log "installed adapter $ADAPTER_VERSION and made it CURRENT"
else
    log "no adapter in this image: the base model is served alone"
fi
printf 'model_version=%s\nadapter_version=%s\n' "$MODEL_VERSION" "$ADAPTER_VERSION" >"$target/MODEL_IMAGE"
log "installed model $MODEL_VERSION into $target"
