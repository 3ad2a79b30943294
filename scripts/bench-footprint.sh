#!/usr/bin/env bash
# Idle footprint of `mxprobe serve` (10 tenants) side by side with Debian's
# prometheus-blackbox-exporter probing the same local Dendrite's
# /_matrix/client/versions every 15 s, all on loopback. Called by `make bench`.
#   WARMUP=30s WINDOW=2m scripts/bench-footprint.sh
# Needs: make tools (Dendrite) and `sudo apt-get install prometheus-blackbox-exporter`.
set -euo pipefail
cd "$(dirname "$0")/.."
blackbox=${BLACKBOX:-$(command -v prometheus-blackbox-exporter || echo /usr/bin/prometheus-blackbox-exporter)}
if [ ! -x "$blackbox" ]; then
  echo "bench-footprint: prometheus-blackbox-exporter not installed; run: sudo apt-get install prometheus-blackbox-exporter" >&2
  exit 1
fi
bin=$(mktemp -d)/mxprobe
trap 'rm -rf "$(dirname "$bin")"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$bin" ./cmd/mxprobe
go run ./internal/tools/benchfootprint --mxprobe "$bin" --blackbox "$blackbox" \
  --warmup "${WARMUP:-30s}" --window "${WINDOW:-2m}"
