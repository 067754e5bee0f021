# The two set-up commands (see README): `make run` and `make test`. Both find
# or start Postgres with scripts/db.sh first.
GO       ?= go
TESTFLAGS ?=

.PHONY: run test build fuzz soak bench

## run: start minigate (sandbox mode without CONFIG=file)
run:
ifdef CONFIG
	$(GO) run ./cmd/minigate serve --config $(CONFIG)
else
	@DATABASE_URL=$$(scripts/db.sh minigate) && export DATABASE_URL && \
	  $(GO) run ./cmd/minigate serve
endif

## test: the whole suite with -race against a real Postgres, then a brief
## fuzz of the parsers and decryptors of platform callbacks
TESTFUZZ ?= ^Fuzz(OpenMessage|Decrypt|DecodeXML|DecryptUserData|PipelineRefusesUnsigned|PayParseNotification|ParseNotification)$$
test:
	@DATABASE_URL=$$(scripts/db.sh) && export DATABASE_URL && \
	  $(GO) vet ./... && \
	  $(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./... && \
	  scripts/fuzz.sh 2000x '$(TESTFUZZ)'

## build: the minigate binary in bin/
build:
	$(GO) build -o bin/minigate ./cmd/minigate


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
	  cd bench && $(GO) run . -minigate ../bin/minigate $(BENCHFLAGS)

## soak: the long resilience tests (internal/e2e, build tag soak): repeated
## kill -9 under bursts, longer database outages; see docs/resilience.md
soak:
	@DATABASE_URL=$$(scripts/db.sh) && export DATABASE_URL && \
	  $(GO) test -race -count=1 -timeout 30m -tags soak -run 'Soak' -v $(TESTFLAGS) ./internal/e2e/
