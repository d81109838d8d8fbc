#!/usr/bin/env bash
# kustomize, pinned, built once into the project's tool cache (go-tool.sh).
#
#   bash k8s/tools/kustomize.sh build k8s/overlays/prod     # render an overlay
#   bash k8s/tools/kustomize.sh --path                      # build if needed, print the binary
#
# `kubectl apply -k` / `kubectl kustomize` render the same manifests where kubectl exists.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh"

# the newest kustomize that builds with Go 1.26 (v5.8.3 needs Go 1.27)
go_tool kustomize "sigs.k8s.io/kustomize/kustomize/v5@v5.8.2" "$@"
