#!/usr/bin/env bash
# Runs the whole test suite (unit + end-to-end with a real registry, skopeo,
# umoci, overlay mounts). Needs root. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo test --workspace --locked "$@"
