#!/usr/bin/env bash
# kustomize, pinned, built once from the Go module proxy and cached (these machines
# take no binary downloads; `go install` of a module is a source build).
#
#   bash k8s/tools/kustomize.sh build k8s/overlays/prod     # render an overlay
#   bash k8s/tools/kustomize.sh --path                      # build if needed, print the binary
#
# `kubectl apply -k` / `kubectl kustomize` render the same manifests where kubectl exists.
set -euo pipefail

VERSION=v5.8.2   # the newest kustomize that builds with Go 1.26 (v5.8.3 needs Go 1.27)
CACHE_DIR=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}
BIN=$CACHE_DIR/bin/kustomize-$VERSION

if [[ ! -x $BIN ]]; then
    command -v go >/dev/null || { echo "kustomize.sh: Go is needed to build kustomize $VERSION" >&2; exit 1; }
    mkdir -p "$CACHE_DIR/bin"
    exec 9>"$BIN.lock"
    flock 9                       # one build at a time; the others wait and reuse it
    if [[ ! -x $BIN ]]; then
        staging=$(mktemp -d "$CACHE_DIR/bin/.build-XXXXXX")
        trap 'rm -rf "$staging"' EXIT
        echo "kustomize.sh: building kustomize $VERSION from the Go module proxy (once) ..." >&2
        GOBIN=$staging GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION"
        mv "$staging/kustomize" "$BIN"
    fi
fi

if [[ ${1:-} == --path ]]; then
    echo "$BIN"
    exit 0
fi
exec "$BIN" "$@"
