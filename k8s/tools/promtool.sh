#!/usr/bin/env bash
# promtool (Prometheus's rule checker and rule unit-test runner), pinned, built once into the
# project's tool cache (go-tool.sh; about 2 GB of modules and a few minutes the first time).
#
#   bash k8s/tools/promtool.sh check rules k8s/monitoring/prometheusrule.rules.yaml
#   bash k8s/tools/promtool.sh test rules k8s/monitoring/tests/alerts.test.yaml
#   bash k8s/tools/promtool.sh --path          # build if needed, print the binary
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh"

# github.com/prometheus/prometheus module version (Prometheus 3.x); builds with Go 1.26
go_tool promtool "github.com/prometheus/prometheus/cmd/promtool@v0.316.0" "$@"
