#!/usr/bin/env bash
# Writes deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/mxprobe.rules.yml:
# the same rules for the Prometheus operator (deploy's TestKubernetesManifests
# checks that they agree).
set -euo pipefail
cd "$(dirname "$0")/.."
out=deploy/kubernetes/prometheusrule.yaml
{
  sed -n '1,/^spec:$/p' "$out"
  sed -n '/^groups:$/,$p' deploy/prometheus/mxprobe.rules.yml | sed 's/^/  /; s/^  $//'
} > "$out.new"
mv "$out.new" "$out"
