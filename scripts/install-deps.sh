#!/usr/bin/env bash
# Installs the system packages Sealpod's demo and tests use (Debian 12, as root).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need+=(docker-registry)
have skopeo || need+=(skopeo)
have umoci || need+=(umoci)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
have htpasswd || need+=(apache2-utils)
have openssl || need+=(openssl)
have zstd || need+=(zstd)
have gzip || need+=(gzip)
have tar || need+=(tar)
have jq || need+=(jq)
have curl || need+=(curl)
have gpg || need+=(gnupg)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; then
    apt-get update -qq
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
