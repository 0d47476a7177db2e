#!/usr/bin/env bash
# Build the two images from this repository: vqa-app:<project version> and
# vqa-model:<model version>--<adapter version> (the promoted adapter, data/adapters/CURRENT, if any).
# Defaults fit a machine without an image registry: the local debootstrap base (made if missing) and
# PyTorch from pip's configured index (PyPI). Elsewhere: BASE_IMAGE=python:3.11-slim-bookworm and
# TORCH_INDEX_URL=<the PyTorch CPU index>.
#
# Usage: docker/build_images.sh [app|model|all]     (default all; prints the tags it built)
# Env:   APP_TAG (default vqa-app:<pyproject version>), ADAPTER_SRC (an adapter folder inside the
#        repository; default the one data/adapters/CURRENT names, else none), MODEL_SRC.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-vqa-base:bookworm}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-}"   # empty: pip's configured index
MODEL_SRC="${MODEL_SRC:-models/blip-vqa-small}"
ADAPTERS_DIR="${ADAPTERS_DIR:-data/adapters}"
what="${1:-all}"
PY="${PYTHON:-python3}"

log() { printf '[build_images] %s\n' "$*" >&2; }
# Docker tags allow [A-Za-z0-9_.-], at most 128 characters.
tag_safe() { printf '%s' "$1" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128; }
# docker build, its output kept in a log shown only when it fails.
build() {
    local out
    out=$(mktemp)
    if ! docker build "$@" >"$out" 2>&1; then
        tail -40 "$out" >&2
        rm -f "$out"
        log "docker build failed"
        exit 1
    fi
    rm -f "$out"
}
json_field() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"; }

if [[ "$BASE_IMAGE" == vqa-base:* ]]; then
    docker/make_base_image.sh "$BASE_IMAGE"
fi

if [[ "$what" == app || "$what" == all ]]; then
    version=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
    tag="${APP_TAG:-vqa-app:$(tag_safe "$version")}"
    start=$(date +%s)
    build --network host -f Dockerfile.app -t "$tag" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" .
    log "$tag built in $(($(date +%s) - start)) s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
    echo "$tag"
fi

if [[ "$what" == model || "$what" == all ]]; then
    [[ -f "$MODEL_SRC/config.json" ]] || { log "no model at $MODEL_SRC (make model builds it)"; exit 1; }
    model_version=""
    [[ -f "$MODEL_SRC/vqa_model.json" ]] && model_version=$(json_field "$MODEL_SRC/vqa_model.json" version)
    model_version="${model_version:-$(basename "$MODEL_SRC")}"
    adapter_src=docker/no-adapter
    adapter_version=none
    if [[ -n "${ADAPTER_SRC:-}" ]]; then
        [[ -f "$ADAPTER_SRC/adapter_config.json" ]] || { log "no adapter at ADAPTER_SRC=$ADAPTER_SRC"; exit 1; }
        adapter_src="${ADAPTER_SRC%/}"
        adapter_version=$(basename "$adapter_src")
    elif [[ -f "$ADAPTERS_DIR/CURRENT" ]]; then
        name=$(tr -d '[:space:]' <"$ADAPTERS_DIR/CURRENT")
        if [[ -n "$name" && -f "$ADAPTERS_DIR/$name/adapter_config.json" ]]; then
            adapter_src="$ADAPTERS_DIR/$name"
            adapter_version="$name"
        fi
    fi
    tag="vqa-model:$(tag_safe "$model_version--$adapter_version")"
    build -f Dockerfile.model -t "$tag" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "MODEL_SRC=$MODEL_SRC" --build-arg "MODEL_VERSION=$model_version" \
        --build-arg "ADAPTER_SRC=$adapter_src" --build-arg "ADAPTER_VERSION=$adapter_version" .
    log "$tag built (model $model_version, adapter $adapter_version)"
    echo "$tag"
fi
