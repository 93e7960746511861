#!/bin/sh
# Regenerates proto/gen/ from proto/*.proto (used by `make proto`). Works offline.
set -eu
cd "$(dirname "$0")"
BUF="../node_modules/@bufbuild/buf/bin/buf"
node "$BUF" lint
rm -rf gen
node "$BUF" generate
