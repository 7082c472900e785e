# acmehook — see README.md. Everything here needs only Go.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/acmehook/acmehook/engine.Version=$(VERSION)
PLUGINS := $(notdir $(wildcard plugins/*))

.PHONY: all build install test lint bench demo fleet-demo fleet-bench proto clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/... $(addprefix ./plugins/,$(PLUGINS))

# install puts acmehook in $(BINDIR), the plugins in $(PLUGINDIR) (the paths
# docs/configuration.md and contrib/systemd use) and the shell completions
# where bash-completion, zsh and fish look for them. DESTDIR stages it.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
PLUGINDIR ?= $(PREFIX)/lib/acmehook
SHAREDIR  ?= $(PREFIX)/share
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(SHAREDIR)/bash-completion/completions \
		$(DESTDIR)$(SHAREDIR)/zsh/site-functions $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d
	install -m 0755 $(BIN)/acmehook $(DESTDIR)$(BINDIR)/
	install -m 0755 $(addprefix $(BIN)/,$(PLUGINS)) $(DESTDIR)$(PLUGINDIR)/
	$(BIN)/acmehook completion bash > $(DESTDIR)$(SHAREDIR)/bash-completion/completions/acmehook
	$(BIN)/acmehook completion zsh > $(DESTDIR)$(SHAREDIR)/zsh/site-functions/_acmehook
	$(BIN)/acmehook completion fish > $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d/acmehook.fish

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@./.ci/check-imports

# demo builds everything, starts Pebble and challtestsrv on loopback and runs
# acmehook with the repository's acmehook.toml (see README.md).
demo: build
	$(GO) run ./internal/demo

# fleet-demo runs three acmehook daemons on one etcd cluster behind a front
# that sends each validation to a random node (internal/fleetdemo; random
# ports, so it runs beside anything).
fleet-demo: build
	$(GO) run ./internal/fleetdemo

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m ./...

# fleet-bench: three daemons, 1,000 certificates (docs/fleet.md, "Benchmark").
fleet-bench:
	$(GO) test -run '^$$' -bench BenchmarkFleet -benchtime 1x -timeout 30m -v ./internal/fleetdemo

clean:
	rm -rf $(BIN)

# proto regenerates the solver protocol's gRPC code in plugin/internal/proto:
# protoc from Debian, the Go generators at pinned versions into a local bin
# directory.
PROTO_DIR           := plugin/internal/proto
PROTOC_GEN_GO       := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC  := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
proto:
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/$(BIN)/tools:$$PATH protoc -I $(PROTO_DIR) \
		--go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
		--go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
		$$(cd $(PROTO_DIR) && find . -name '*.proto' | sed 's|^\./||')
