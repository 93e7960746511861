# Tally: `make run` and `make test` do all set-up themselves on a fresh Debian machine
# (only Node.js and npm present). See README.md.

SHELL := /bin/bash
NPM_STAMP := node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_FILES ?= dist/test/*.test.js

.PHONY: run test build deps nats chromium redis jemalloc proto bench bench-smoke clean

# Nodes run on jemalloc (README "Memory per active window"): Debian's libjemalloc2, preloaded,
# with its background threads, which hand freed memory back on time even when the thread that
# freed it stays idle (glibc's malloc ignores MALLOC_CONF).
JEMALLOC = $$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -1)
MALLOC_CONF ?= background_thread:true

run: deps nats jemalloc build
	LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=$(MALLOC_CONF) node bin/tally.js up $(ARGS)

test: deps nats chromium build
	node --test --test-reporter=spec --test-concurrency=1 $(TEST_FILES)

build: deps
	npx tsc -p tsconfig.json

deps: $(NPM_STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NPM_STAMP)

# Debian's nats-server (2.9.x), installed only when missing.
nats:
	@command -v nats-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }

# Debian's Chromium, for the dashboard's browser test.
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The full benchmark suite (bench/README.md): tables in bench/results/latest.md and .json.
bench: deps nats redis jemalloc build
	node dist/bench/run.js

# Every scenario for a few seconds: checks the suite still runs (bench/results/smoke.md).
bench-smoke: deps nats redis jemalloc build
	node dist/bench/run.js --smoke

# Debian's Redis, for the naive-pipeline baseline of the benchmarks.
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# Debian's jemalloc, which nodes preload: it hands freed memory back to the OS, glibc's malloc much less.
jemalloc:
	@ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2; }

proto: deps
	proto/generate.sh

clean:
	rm -rf dist
