# bai: build, run and test every module of the workspace.
MODULES := pkg/events pkg/slots pkg/svcflags pkg/boltcheck internal/natstest services/gateway services/scheduler \
           services/registry services/agent tools/bai server
GO      ?= go
BIN     := $(CURDIR)/bin
TESTFLAGS ?=
# bai starts faster static (no dynamic loader, libc or pthreads) and
# without urfave/cli's man/markdown generator (its init costs; bai never
# uses it).
BAI_BUILD := -tags urfave_cli_no_docs

# staticcheck runs in lint when it is installed (make tools installs this
# version); CI sets STATICCHECK_REQUIRED=1, so there it must be.
# staticcheck 2026.2.2 is module version v0.8.2.
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(or $(shell command -v staticcheck 2>/dev/null),$(wildcard $(shell $(GO) env GOPATH)/bin/staticcheck))
STATICCHECK_REQUIRED ?=

.PHONY: build run test lint modules bench clean tools static images deploy-configs test-cluster bench-cluster

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(BAI_BUILD) -o $(BIN)/bai ./tools/bai
	$(GO) build -o $(BIN)/bai-server ./server/cmd/bai-server
	$(GO) build -o $(BIN)/bai-gateway ./services/gateway/cmd/bai-gateway
	$(GO) build -o $(BIN)/bai-scheduler ./services/scheduler/cmd/bai-scheduler
	$(GO) build -o $(BIN)/bai-registry ./services/registry/cmd/bai-registry
	$(GO) build -o $(BIN)/bai-agent ./services/agent/cmd/bai-agent
	$(GO) build -o $(BIN)/bai-sandbox-init ./services/agent/cmd/bai-sandbox-init
	$(GO) build -o $(BIN)/bai-bench ./server/cmd/bai-bench

# Starts the all-in-one server in the foreground (Ctrl-C stops it cleanly).
run: build
	$(BIN)/bai-server $(ARGS)

# Every module's tests with the race detector, after lint and a
# stand-alone build of each module; then the agent's sandbox tests again
# with every execution through the sandbox helper (BAI_SANDBOX_HELPER),
# the way of a machine where the agent cannot start them itself.
test: lint modules
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; (cd $$m && $(GO) test -race -count=1 $(TESTFLAGS) ./...); \
	done
	@echo "== services/agent, through the sandbox helper"
	cd services/agent && BAI_SANDBOX_HELPER=1 $(GO) test -race -count=1 $(TESTFLAGS) -run '$(HELPER_TESTS)' .

# The agent's tests of what a sandboxed execution sees and can do.
HELPER_TESTS := Sandbox|Kernel|Prestart|Spawn|ExecuteOutput|Batch|GPU|Terminate

lint:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@if [ -n "$(STATICCHECK)" ]; then \
		set -e; for m in $(MODULES); do (cd $$m && $(STATICCHECK) ./...); done; \
	elif [ -n "$(STATICCHECK_REQUIRED)" ]; then \
		echo "lint: staticcheck is not installed (make tools installs it)"; exit 1; \
	else \
		echo "lint: staticcheck skipped: not installed (make tools installs it)"; \
	fi

# The tools lint runs that the go toolchain does not bring.
tools:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Each module builds alone, with its replace lines (GOWORK=off).
modules:
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) build ./...); done

bench:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...); done

clean:
	rm -rf $(BIN)

# --- cluster (issue 14): static binaries, the FROM scratch image, configs.
STATIC := $(BIN)/static

# Every binary static (CGO_ENABLED=0), nats-server built from the module
# server/ requires, and bai-deploy: what the image and systemd install.
static:
	@mkdir -p $(STATIC)
	CGO_ENABLED=0 $(GO) build $(BAI_BUILD) -o $(STATIC)/bai ./tools/bai
	cd server && CGO_ENABLED=0 $(GO) build -o $(STATIC)/nats-server github.com/nats-io/nats-server/v2
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-deploy ./server/cmd/bai-deploy
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-gateway ./services/gateway/cmd/bai-gateway
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-scheduler ./services/scheduler/cmd/bai-scheduler
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-registry ./services/registry/cmd/bai-registry
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-agent ./services/agent/cmd/bai-agent
	CGO_ENABLED=0 $(GO) build -o $(STATIC)/bai-sandbox-init ./services/agent/cmd/bai-sandbox-init
	@mkdir -p $(BIN) && cp $(STATIC)/bai-deploy $(BIN)/bai-deploy

# bai:local, FROM scratch, from bin/static only (nothing pulled: no
# registry needed). deploy/compose.yaml runs it.
images: static
	docker build -t bai:local -f deploy/docker/Dockerfile $(STATIC)

# deploy/nats from the permission table (a test checks it is current).
deploy-configs:
	$(GO) run ./server/cmd/bai-deploy config --out deploy/nats

# The multi-process fault test: 3 nats-server processes from deploy's
# generator, 2 gateways, 2 schedulers, 2 registries, 3 agents, sessions
# through the client while nodes, the scheduler leader, an agent and a
# registry are killed (server/clustertest, build tag cluster).
test-cluster:
	cd server && $(GO) test -tags cluster -count=1 -timeout 15m -v -run '^TestCluster$$' ./clustertest/

# bai-bench's closed loop against the one-process bai-server and against
# the cluster of test-cluster (3 NATS nodes, R3), no fault: the figures of
# BENCHMARKS.md's cluster section. BAI_BENCH_ARGS adds bai-bench flags.
bench-cluster:
	cd server && $(GO) test -tags cluster -count=1 -timeout 20m -v -run '^TestClusterBench$$' ./clustertest/
