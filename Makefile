# asof — the README's test command is `make test`.
GO      ?= go
TIMEOUT ?= 20m

.PHONY: all build deps test unit fuzz integration vet bench

all: build

build:
	$(GO) build -o asof ./cmd/asof

# What the tests need: Debian packages (idempotent: apt-get runs only when
# something is missing) and the Go modules.
deps:
	bash scripts/test-deps.sh
	$(GO) mod download

vet:
	$(GO) vet ./...

# Unit tests of every package, under the race detector.
unit:
	$(GO) test -race -timeout $(TIMEOUT) $$($(GO) list ./... | grep -v /integration)

# Every decoder of bytes from the network, fuzzed for a few seconds from
# the committed corpus (testdata/fuzz): no panic, no hang, other clients
# unaffected. `go test -fuzz` takes one target of one package at a time.
FUZZTIME ?= 5s
FUZZ = \
	./nfs/sunrpc/:FuzzReadCall \
	./nfs/:FuzzProcedureArgs \
	./nfs/:FuzzConnection \
	./ninep/:FuzzStream \
	./ninep/:FuzzMessages \
	./mirror/:FuzzDecode

fuzz:
	@set -e; for t in $(FUZZ); do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) $${t%%:*}; \
	done

# End-to-end tests with real clients: libnfs, diod's 9P tools, and the
# Linux kernel's NFS and 9P clients in a qemu guest.
integration:
	$(GO) test -timeout $(TIMEOUT) -count=1 ./integration/...

test: deps vet unit fuzz integration

# Benchmarks: go test -bench in the packages, and integration/bench.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./history/ ./fs/
