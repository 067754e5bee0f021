# The two set-up commands (see README): `make run` and `make test`. Both find
# or start Postgres with scripts/db.sh first.
GO       ?= go
TESTFLAGS ?=
# BIN is where `make build` writes the binary; `make run` serves it.
BIN      ?= bin/minigate
# DB is the database `make run` uses (created if missing) on the server
# scripts/db.sh finds; it wins over a config file's database_url.
DB       ?= minigate
# Stamped into the binary: `bin/minigate version`.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: run test build fuzz soak bench db-stop tools

## run: build bin/minigate and serve it (sandbox mode without CONFIG=file).
## The server replaces make's shell (exec): Ctrl-C or SIGTERM stops it
## gracefully and make exits with it.
run: build
	@echo "make run: finding or starting Postgres (scripts/db.sh), database $(DB)" >&2
	@DATABASE_URL=$$(scripts/db.sh $(DB)) && export DATABASE_URL && \
	  echo "make run: starting $(BIN) serve $(if $(CONFIG),--config $(CONFIG),in sandbox mode); Ctrl-C stops it" >&2 && \
	  exec $(BIN) serve $(if $(CONFIG),--config $(CONFIG))

## test: the whole suite with -race against a real Postgres (the README's
## walk-throughs included, which need curl and jq), then a brief fuzz of
## the parsers and decryptors of platform callbacks
TESTFUZZ ?= ^Fuzz(OpenMessage|Decrypt|DecodeXML|DecryptUserData|PipelineRefusesUnsigned|PayParseNotification|ParseNotification|ParseXPayPush)$$
test: tools
	@DATABASE_URL=$$(scripts/db.sh) && export DATABASE_URL && \
	  $(GO) vet ./... && \
	  $(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./... && \
	  scripts/fuzz.sh 2000x '$(TESTFUZZ)'

## tools: install what the walk-throughs use (curl, jq) when missing
tools:
	@scripts/tools.sh

## build: the minigate binary ($(BIN)), stamped with version and commit
build:
	@echo "make build: $(BIN) $(VERSION) (a first build downloads and compiles the dependencies: a minute or two)" >&2
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/minigate

## db-stop: stop the private Postgres cluster in .pg/ that scripts/db.sh
## starts when no other server is reachable (a server you run is left alone)
db-stop:
	@scripts/db.sh stop

## fuzz: every fuzz target for FUZZTIME each: a count of inputs (the
## default) or a duration; see scripts/fuzz.sh
FUZZTIME ?= 100000x
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

## bench: the benchmark table of docs/benchmarks.md (minutes; not part of
## test). A separate module (bench/) so its load library stays out of
## minigate's dependencies. BENCHFLAGS passes flags, e.g. -runs 5 -out FILE.
BENCHFLAGS ?=
bench: build
	@DATABASE_URL=$$(scripts/db.sh) && export DATABASE_URL && \
	  cd bench && $(GO) run . -minigate $(abspath $(BIN)) $(BENCHFLAGS)

## soak: the long resilience tests (internal/e2e, build tag soak): repeated
## kill -9 under bursts, longer database outages; see docs/resilience.md
soak:
	@DATABASE_URL=$$(scripts/db.sh) && export DATABASE_URL && \
	  $(GO) test -race -count=1 -timeout 30m -tags soak -run 'Soak' -v $(TESTFLAGS) ./internal/e2e/
