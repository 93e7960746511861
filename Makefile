# Tally: `make run` and `make test` do all set-up themselves on a fresh Debian machine
# (only Node.js and npm present). See README.md.

SHELL := /bin/bash
NPM_STAMP := node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_FILES ?= dist/test/*.test.js

.PHONY: run test build deps nats chromium proto bench clean

run: deps nats build
	node bin/tally.js up $(ARGS)

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

proto: deps
	proto/generate.sh

clean:
	rm -rf dist
