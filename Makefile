# mxprobe: `make demo` runs it against a local deployment, `make test` tests it.
SHELL     := /bin/bash
GO        ?= go
TOOLS_BIN := $(CURDIR)/.tools/bin
DENDRITE_VERSION := v0.13.8
PKG       := github.com/prometheus/common/version
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    := $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Revision=$(REVISION) -X $(PKG).Branch=$(BRANCH) \
	         -X $(PKG).BuildUser=mxprobe -X $(PKG).BuildDate=$(shell date -u +%Y%m%dT%H%M%SZ)
TEST_FLAGS ?= -race -count=1 -timeout 25m
FUZZTIME  ?= 60s
PKGS      ?= ./...
# The packages whose timing tests wait on sync points or an injected clock.
TIMING_PKGS := ./alerts/notify/ ./exporters/web/ ./probes/
# Test-only modules of their own (kept out of the daemon's module because of
# their dependencies: kustomize, the Kubernetes and Prometheus-operator
# types), run by `make test` into the same report.
NESTED_MODULES ?= deploy/kubernetes/kustomizetest

export MXPROBE_TOOLS := $(TOOLS_BIN)

.PHONY: all build tools test test-timing demo bench fuzz soak fmt vet clean

all: build

## build: the mxprobe binary (static, as the container builds it)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/mxprobe ./cmd/mxprobe

## tools: a pinned Dendrite (go install) and a Synapse root file system (mmdebstrap, root only) in .tools/
tools: $(TOOLS_BIN)/dendrite synapse-root

# Synapse needs root and mmdebstrap: where it cannot be built, the tests
# that need it say so (and skip only with MXPROBE_SKIP_INTEGRATION=1).
.PHONY: synapse-root
synapse-root:
	@./scripts/build-synapse-root.sh || echo "WARNING: no Synapse root file system; Synapse tests will fail (or skip with MXPROBE_SKIP_INTEGRATION=1), make demo falls back to Dendrite"

$(TOOLS_BIN)/dendrite:
	@echo "installing Dendrite $(DENDRITE_VERSION) into $(TOOLS_BIN) (go install, about 1.5 min cold)"
	GOBIN=$(TOOLS_BIN) CGO_ENABLED=0 $(GO) install \
		github.com/matrix-org/dendrite/cmd/dendrite@$(DENDRITE_VERSION) \
		github.com/matrix-org/dendrite/cmd/generate-config@$(DENDRITE_VERSION) \
		github.com/matrix-org/dendrite/cmd/generate-keys@$(DENDRITE_VERSION) \
		github.com/matrix-org/dendrite/cmd/create-account@$(DENDRITE_VERSION)

## demo: a local Dendrite (and stand-ins) with demo tenants, probed by mxprobe until Ctrl-C
demo: tools build
	$(GO) run ./cmd/mxprobe-demo --mxprobe bin/mxprobe

## test: formatting, vet, and every test with the race detector, integration tests included
test: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@for m in $(NESTED_MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	set -o pipefail; { \
		status=0; \
		$(GO) test $(TEST_FLAGS) -json $(PKGS) || status=1; \
		for m in $(NESTED_MODULES); do (cd $$m && $(GO) test $(TEST_FLAGS) -json ./...) || status=1; done; \
		exit $$status; \
	} | $(GO) run ./internal/tools/testreport

## test-timing: the timing-sensitive packages three times over (run it alongside `make bench`)
test-timing:
	$(MAKE) test PKGS="$(TIMING_PKGS)" NESTED_MODULES= TEST_FLAGS="-race -count=3 -timeout 25m"

## bench: benchmarks, benchstat-friendly (one package at a time, so they do not measure each other)
bench: tools
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count 1 -timeout 30m ./...
	./scripts/bench-footprint.sh

## soak: SOAK (default 30m) of 50 tenants against Synapse (PostgreSQL, behind the MAS emulator) with random faults (not in CI)
SOAK ?= 30m
SOAK_HOMESERVER ?= synapse
soak: tools build postgresql
	$(GO) run ./internal/tools/soak --mxprobe bin/mxprobe --duration $(SOAK) --homeserver $(SOAK_HOMESERVER)

# postgresql: Debian's PostgreSQL server binaries for the soak's Synapse
# (the harness runs a private server of its own on loopback, data in a temp
# dir, stopped at the end); installed with apt-get when absent.
.PHONY: postgresql
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing PostgreSQL (apt-get install postgresql)"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends postgresql; }

## fuzz: each fuzz target for FUZZTIME
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
