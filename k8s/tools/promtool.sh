#!/usr/bin/env bash
# promtool (Prometheus's rule checker and rule unit-test runner), pinned, built once from the
# Go module proxy into the project's tool cache (these machines take no binary downloads; `go
# install` of a module is a source build: a few minutes and about 2 GB of modules the first time).
#
#   bash k8s/tools/promtool.sh check rules k8s/monitoring/prometheusrule.rules.yaml
#   bash k8s/tools/promtool.sh test rules k8s/monitoring/tests/alerts.test.yaml
#   bash k8s/tools/promtool.sh --path          # build if needed, print the binary
#
# Settings (environment):
#   MUTAGG_CACHE_DIR   tool cache (default ~/.cache/mutation-aggregator); the binary is
#                      <cache>/bin/promtool-<version>
set -euo pipefail

VERSION=v0.316.0   # github.com/prometheus/prometheus module version (Prometheus 3.x); builds with Go 1.26
CACHE_DIR=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}
BIN=$CACHE_DIR/bin/promtool-$VERSION

if [[ ! -x $BIN ]]; then
    command -v go >/dev/null || { echo "promtool.sh: Go is needed to build promtool $VERSION" >&2; exit 1; }
    mkdir -p "$CACHE_DIR/bin"
    exec 9>"$BIN.lock"
    flock 9                       # one build at a time; the others wait and reuse it
    if [[ ! -x $BIN ]]; then
        staging=$(mktemp -d "$CACHE_DIR/bin/.build-XXXXXX")
        trap 'rm -rf "$staging"' EXIT
        echo "promtool.sh: building promtool $VERSION from the Go module proxy (once, a few minutes) ..." >&2
        GOBIN=$staging GOTOOLCHAIN=local GOFLAGS=-mod=mod \
            go install "github.com/prometheus/prometheus/cmd/promtool@$VERSION"
        mv "$staging/promtool" "$BIN"   # a rename: an interrupted build never looks complete
    fi
fi

if [[ ${1:-} == --path ]]; then
    echo "$BIN"
    exit 0
fi
exec "$BIN" "$@"
