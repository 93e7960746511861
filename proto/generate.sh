#!/bin/sh
# Regenerates proto/gen/ from proto/*.proto (used by `make proto`). The generated code is
# committed, so building Tally never needs buf. buf is fetched on demand from the npm registry
# (not a devDependency: the registry mirror here lacks some of its optional platform packages,
# which makes `npm ci` refuse the lock file).
set -eu
cd "$(dirname "$0")"
BUF="npm exec --yes --package=@bufbuild/buf@1.75.0 -- buf"
$BUF lint
rm -rf gen
$BUF generate
