# acmehook — see README.md. Everything here needs only Go.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/acmehook/acmehook/engine.Version=$(VERSION)
PLUGINS := $(notdir $(wildcard plugins/*))

.PHONY: all build test lint bench demo proto clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/... $(addprefix ./plugins/,$(PLUGINS))

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@./.ci/check-imports

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m ./...

clean:
	rm -rf $(BIN)
