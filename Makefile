# taskyard — run `make help` for the targets.
#
# Every target loops over the modules listed in go.work (`go test ./...`
# does not cross module boundaries). Only Go is needed: tools are pinned in
# tools/go.mod and run with `go run`/`go tool`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

MODULES := $(shell go list -m -f '{{.Dir}}' | sed "s|^$(CURDIR)/||")
# Modules that have Go packages yet (a module may hold only its go.mod).
GO_MODULES := $(foreach m,$(MODULES),$(if $(shell find $(m) -name '*.go' -not -path '*/testdata/*' -print -quit),$(m)))
PROTO_FILES := $(sort $(shell cd proto && find taskyard -name '*.proto'))

# -race needs cgo and a C compiler; without one the tests still run, without it.
RACE := $(shell [ "$$(go env CGO_ENABLED)" = 1 ] && command -v "$$(go env CC)" >/dev/null 2>&1 && echo -race)

DATA ?= .data

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the whole system in one process (taskyard dev): embedded NATS, exec runner, examples/.
	go run ./tools/cmd/taskyard dev --schedules examples/schedules --clusters examples/clusters --data $(DATA)

.PHONY: test
test: vet unit proto-check e2e ## vet + go test -race for every module + proto-check + e2e (what CI runs; e2e skips without Docker).

.PHONY: vet
vet: ## go vet every module.
	@for m in $(GO_MODULES); do echo "== vet $$m"; (cd $$m && go vet ./...); done

.PHONY: unit
unit: ## go test every module (-race when cgo is available).
	@[ -n "$(RACE)" ] || echo "note: no C compiler for cgo, running tests without -race"
	@for m in $(GO_MODULES); do echo "== test $$m"; (cd $$m && go test $(RACE) -count=1 ./...); done

.PHONY: lint
lint: vet ## gofmt check + go vet.
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: proto
proto: ## Regenerate proto/taskyard/v1/*.pb.go from the .proto files.
	cd tools && go run ./cmd/protogen -I ../proto -out ../proto $(PROTO_FILES)

.PHONY: proto-check
proto-check: ## Fail when the committed generated code differs from the .proto files.
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	(cd tools && go run ./cmd/protogen -I ../proto -out $$tmp $(PROTO_FILES)); \
	for f in $$(cd $$tmp && find . -name '*.pb.go'); do \
	  diff -u proto/$$f $$tmp/$$f || { echo "proto-check: proto/$$f is stale, run 'make proto'"; exit 1; }; \
	done; echo "proto-check: generated code is up to date"

.PHONY: tidy
tidy: ## go mod tidy every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy); done

# ---- binaries and images --------------------------------------------------

GOARCH ?= $(shell go env GOARCH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Base image; `make images BASE=scratch` on machines without a registry.
BASE ?= gcr.io/distroless/static-debian12:nonroot
IMAGE_REGISTRY ?= taskyard
IMAGE_TAG ?= $(VERSION)
BIN := bin/linux_$(GOARCH)
COMMANDS := ./services/scheduler/cmd/taskyard-scheduler ./services/exitwatch/cmd/taskyard-exitwatch \
	./services/logrouter/cmd/taskyard-logrouter ./services/exporter/cmd/taskyard-exporter \
	./services/exporter/cmd/mackerel-plugin-taskyard ./services/exporter/cmd/check-taskyard \
	./tools/cmd/taskyard ./tools/cmd/httpcheck
IMAGES := scheduler exitwatch logrouter exporter cli
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: binaries
binaries: ## Build static linux binaries of every daemon, plugin and the CLI into bin/.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -tags timetzdata -ldflags '-s -w' -o $(BIN)/ $(COMMANDS)

.PHONY: images
images: binaries ## Build one image per daemon + the CLI (BASE=scratch without a registry).
	@[ -f "$(CA_BUNDLE)" ] || { echo "images: no CA bundle at $(CA_BUNDLE) (set CA_BUNDLE=...)"; exit 1; }
	cp $(CA_BUNDLE) $(BIN)/ca-certificates.crt
	mkdir -p $(BIN)/var-lib-taskyard && touch $(BIN)/var-lib-taskyard/.keep
	@for t in $(IMAGES); do \
	  name=taskyard-$$t; [ $$t = cli ] && name=taskyard; \
	  echo "== image $(IMAGE_REGISTRY)/$$name:$(IMAGE_TAG)"; \
	  docker build -q -f deploy/docker/Dockerfile --target $$t --build-arg BASE=$(BASE) \
	    --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	    -t $(IMAGE_REGISTRY)/$$name:$(IMAGE_TAG) $(BIN); \
	done

# ---- the local stack (docker-compose.yml) and the e2e suite ---------------

# Helpers of the local stack, built from Go modules so no registry is needed.
LOCAL_COMMANDS := ./tools/cmd/nats-server ./tools/cmd/fakes3 ./tools/cmd/webhook-sink ./tools/cmd/demojob
LOCAL_IMAGES := nats fakes3 webhook-sink demojob
# docker compose v2 when installed, else docker-compose (v1 CLI).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
DOCKER_GID ?= $(shell stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)
# The e2e suite builds its images FROM scratch (works with and without a
# registry) and tags them E2E_TAG.
E2E_TAG ?= e2e
E2E_BASE ?= scratch
E2E_TIMEOUT ?= 14m
E2E_RUN ?= .
# A -skip regexp (go test), e.g. E2E_SKIP=TestFaultNATSOutage.
E2E_SKIP ?=

.PHONY: local-binaries
local-binaries: ## Build the local stack's helpers (nats-server, fakes3, webhook-sink, demojob) into bin/.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '-s -w' -o $(BIN)/ $(LOCAL_COMMANDS)

.PHONY: local-images
local-images: images local-binaries ## images + the local stack's helper images (BASE=scratch without a registry).
	@for t in $(LOCAL_IMAGES); do \
	  echo "== image $(IMAGE_REGISTRY)/taskyard-$$t:$(IMAGE_TAG)"; \
	  docker build -q -f deploy/docker/Dockerfile.local --target $$t --build-arg BASE=$(BASE) \
	    --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	    -t $(IMAGE_REGISTRY)/taskyard-$$t:$(IMAGE_TAG) $(BIN); \
	done

.PHONY: up
up: ## Build the images (tag local, FROM scratch) and start the whole stack with docker compose.
	$(MAKE) local-images IMAGE_TAG=local BASE=scratch
	DOCKER_GID=$(DOCKER_GID) $(COMPOSE) -f docker-compose.yml -f deploy/compose/local-build.yml up -d
	$(COMPOSE) -f docker-compose.yml -f deploy/compose/local-build.yml ps

.PHONY: down
down: ## Stop the stack started by `make up` and delete its volumes.
	DOCKER_GID=$(DOCKER_GID) $(COMPOSE) -f docker-compose.yml -f deploy/compose/local-build.yml --profile ha down -v --remove-orphans

.PHONY: e2e
e2e: ## End-to-end + fault suite against the docker-compose stack (skips without a Docker engine unless TASKYARD_E2E_REQUIRED=1).
	@if ! docker info >/dev/null 2>&1; then \
	  if [ "$${TASKYARD_E2E_REQUIRED:-}" = 1 ]; then echo "e2e: FAIL: no Docker engine reachable and TASKYARD_E2E_REQUIRED=1"; exit 1; fi; \
	  echo "e2e: SKIP: no Docker engine reachable (docker info failed); set TASKYARD_E2E_REQUIRED=1 to make this a failure"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory local-images IMAGE_TAG=$(E2E_TAG) BASE=$(E2E_BASE); \
	rc=0; cd tools && TASKYARD_E2E=1 TASKYARD_E2E_TAG=$(E2E_TAG) TASKYARD_E2E_BIN=$(CURDIR)/$(BIN) TASKYARD_E2E_COMPOSE="$(COMPOSE)" \
	  go test -count=1 -timeout $(E2E_TIMEOUT) -v -run '$(E2E_RUN)' $(if $(E2E_SKIP),-skip '$(E2E_SKIP)') ./e2e/ || rc=$$?; \
	cd $(CURDIR) && $(COMPOSE) -p taskyard-e2e -f docker-compose.yml -f deploy/compose/local-build.yml --profile ha --profile tools \
	  down -v --remove-orphans -t 5 >/dev/null 2>&1 || true; \
	exit $$rc

# ---- benchmarks -----------------------------------------------------------

.PHONY: bench
bench: ## Run every benchmark behind docs/benchmarks.md (about 15 min; copy the figures there).
	@echo "== machine"; nproc; go version; uptime
	cd services/kit && go test ./schedule -run '^$$' -bench Next -benchmem
	cd services/exporter && go test ./internal/ingest -run '^$$' -bench Ingest -benchtime 200000x -cpu 1 -count 3
	cd services/exporter && go test ./internal/aggregate -run '^$$' -bench Render -cpu 1 -count 3
	cd tools && go run ./cmd/bench-logrouter -records 300000 -runs 3
	cd tools && go run ./cmd/bench-scheduler -schedules 10000 -load 3m -idle 30s
	@mkdir -p bin/bench
	go build -o bin/bench/taskyard-exitwatch ./services/exitwatch/cmd/taskyard-exitwatch
	cd tools && go run ./cmd/bench-exitwatch --exitwatch ../bin/bench/taskyard-exitwatch
