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
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the whole system in one process (taskyard dev): embedded NATS, exec runner, examples/.
	go run ./tools/cmd/taskyard dev --schedules examples/schedules --clusters examples/clusters --data $(DATA)

.PHONY: test
test: vet unit proto-check ## vet + go test -race for every module + proto-check (what CI runs).

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
