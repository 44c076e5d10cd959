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
# kernel-config's Kconfig test (tests/kconfig_tree.rs) builds scripts/kconfig.
have flex || need+=(flex)
have bison || need+=(bison)
have bc || need+=(bc)
# The VM test and `demo.sh vm`: qemu (TCG), the initramfs builder's tools,
# socat for qemu's guestfwd forwards, apt's download of the guest kernel.
have qemu-system-x86_64 || need+=(qemu-system-x86)
have cpio || need+=(cpio)
have xz || need+=(xz-utils)
have socat || need+=(socat)
have objcopy || need+=(binutils)

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

# vhost-device-vsock 0.3.0 (the host side of virtio-vsock without the vhost
# kernel module: qemu's vhost-user-vsock-pci + a Firecracker-style hybrid vsock
# unix socket). Built from crates.io once; ~7 min on 2 cores (a fresh CI machine).
VHDV_ROOT=/var/cache/sealpod/vhost-device-vsock-0.3.0
if [ ! -x "$VHDV_ROOT/bin/vhost-device-vsock" ]; then
  echo "install-deps: building vhost-device-vsock 0.3.0 into $VHDV_ROOT (takes minutes, once)" >&2
  mkdir -p "$VHDV_ROOT"
  nice -n 10 cargo install --quiet --locked vhost-device-vsock --version 0.3.0 --root "$VHDV_ROOT" >&2
fi
