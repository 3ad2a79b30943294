// Package deploy holds mxprobe's deployment artefacts (Dockerfile, compose
// file, Kubernetes manifests, Prometheus rules and scrape configuration,
// Alertmanager example) and the tests that check them with the real tools:
// promtool, amtool, the Go toolchain, and a real Prometheus scraping a daemon
// that probes a local Dendrite.
package deploy
