#!/usr/bin/env bash
# Sourced by the pinned-tool wrappers (kustomize.sh, promtool.sh): build a Go command once from
# the Go module proxy into the project's tool cache (these machines take no binary downloads;
# `go install` of a module is a source build), then run it, or print its path with --path.
#
#   go_tool NAME PACKAGE@VERSION ARGS...      the binary is <cache>/bin/NAME-VERSION
#
# Settings (environment):
#   MUTAGG_CACHE_DIR   tool cache (default ~/.cache/mutation-aggregator)

go_tool() {
    local name=$1 package=$2 version=${2##*@}
    shift 2
    local cache_dir=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}
    local bin=$cache_dir/bin/$name-$version
    if [[ ! -x $bin ]]; then
        command -v go >/dev/null || { echo "$name: Go is needed to build $name $version" >&2; exit 1; }
        mkdir -p "$cache_dir/bin"
        exec 9>"$bin.lock"
        flock 9                       # one build at a time; the others wait and reuse it
        if [[ ! -x $bin ]]; then
            local staging
            staging=$(mktemp -d "$cache_dir/bin/.build-XXXXXX")
            trap 'rm -rf "$staging"' EXIT
            echo "$name: building $name $version from the Go module proxy (once, a few minutes) ..." >&2
            GOBIN=$staging GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$package"
            mv "$staging/$name" "$bin"   # a rename: an interrupted build never looks complete
        fi
    fi
    if [[ ${1:-} == --path ]]; then
        echo "$bin"
        exit 0
    fi
    exec "$bin" "$@"
}
