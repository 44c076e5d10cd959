#!/usr/bin/env bash
# Builds a Sealpod guest for qemu: Debian's current 6.12 cloud kernel (taken
# from its .deb with apt-get download + dpkg-deb -x; nothing is installed on
# this machine) and an initramfs whose /init is guest-agent.
#
# usage: scripts/vm/build-guest.sh --agent PATH/guest-agent [--kernel-config PATH/kernel-config]
#
# Prints (stdout, one per line) KVER=..., KERNEL=<vmlinuz>, INITRD=<initrd>;
# everything else goes to stderr. The kernel, its config and the modules the
# guest needs are cached under $SEALPOD_VM_CACHE (default /var/cache/sealpod/vm)
# keyed by kernel version; initramfs images are cached keyed by the agent
# binary, the kernel version and this script, so a repeated run costs a hash.
#
# Env: SEALPOD_GUEST_KERNEL=linux-image-6.12.N+deb12-cloud-amd64 pins the package.
set -euo pipefail

AGENT=
KCONFIG_BIN=
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) AGENT=$2; shift 2 ;;
    --kernel-config) KCONFIG_BIN=$2; shift 2 ;;
    *) echo "build-guest: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$AGENT" ] && [ -x "$AGENT" ] || { echo "build-guest: --agent PATH (an executable guest-agent) is required" >&2; exit 2; }
CACHE=${SEALPOD_VM_CACHE:-/var/cache/sealpod/vm}
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
log() { echo "build-guest: $*" >&2; }
mkdir -p "$CACHE/kernel" "$CACHE/initrd"

# --- which kernel: what Debian's linux-image-6.12-cloud-amd64 depends on today
PKG=${SEALPOD_GUEST_KERNEL:-}
current_kernel() {
  apt-cache depends linux-image-6.12-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-6\.12\..*-cloud-amd64\)$/\1/p' | head -1
}
if [ -z "$PKG" ]; then
  PKG=$(current_kernel) || true
  if [ -z "$PKG" ] && [ -z "$(ls -A "$CACHE/kernel" 2>/dev/null)" ] && [ "$(id -u)" = 0 ]; then
    log "apt knows no linux-image-6.12-cloud-amd64: apt-get update"
    apt-get update -qq >&2 || true
    PKG=$(current_kernel) || true
  fi
fi
if [ -z "$PKG" ]; then
  PKG=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$' 2>/dev/null \
        | cut -d' ' -f1 | sort -V | tail -1) || true
fi
if [ -z "$PKG" ]; then
  # Offline (no package lists): the newest kernel already in the cache.
  cached=$(ls -1 "$CACHE/kernel" 2>/dev/null | sort -V | tail -1) || true
  [ -n "$cached" ] || { echo "build-guest: no linux-image-6.12.*-cloud-amd64 known to apt (run apt-get update) and none cached in $CACHE" >&2; exit 1; }
  PKG=linux-image-$cached
fi
KVER=${PKG#linux-image-}
KDIR=$CACHE/kernel/$KVER

# Modules the guest needs (only those the kernel builds as modules are taken),
# in an order that loads in one pass; the agent retries in passes anyway.
MODULES="net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common net/vmw_vsock/vmw_vsock_virtio_transport
fs/overlayfs/overlay net/core/failover drivers/net/net_failover drivers/net/virtio_net
drivers/block/virtio_blk"

# The cache holds the modules of $MODULES: another list means fetching again.
if [ "$(cat "$KDIR/.complete" 2>/dev/null)" != "$MODULES" ]; then
  log "fetching $PKG (apt-get download + dpkg-deb -x, nothing installed)"
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  (cd "$T" && apt-get download -q "$PKG" >&2)
  dpkg-deb -x "$T"/"$PKG"_*.deb "$T/x"
  rm -rf "$KDIR"; mkdir -p "$KDIR/modules"
  cp "$T/x/boot/vmlinuz-$KVER" "$KDIR/vmlinuz"
  cp "$T/x/boot/config-$KVER" "$KDIR/config"
  M=$T/x/lib/modules/$KVER/kernel
  : > "$KDIR/modules/load"
  for m in $MODULES; do
    f=$(ls "$M/$m".ko* 2>/dev/null | head -1) || true
    [ -n "$f" ] || { log "note: $m is not a module of $KVER (built in or absent)"; continue; }
    b=$(basename "$m").ko
    case "$f" in
      *.ko.xz) xz -dc "$f" > "$KDIR/modules/$b" ;;
      *.ko.zst) zstd -qdc "$f" > "$KDIR/modules/$b" ;;
      *.ko.gz) gzip -dc "$f" > "$KDIR/modules/$b" ;;
      *) cp "$f" "$KDIR/modules/$b" ;;
    esac
    echo "$b" >> "$KDIR/modules/load"
  done
  printf '%s' "$MODULES" > "$KDIR/.complete"
  rm -rf "$T"; trap - EXIT
  log "cached $KVER in $KDIR"
fi

# --- what the stock kernel lacks against our fragments (informative: the
# guest works with modules; a production guest kernel is built from them)
if [ -z "$KCONFIG_BIN" ]; then
  for c in "$ROOT/target/release/kernel-config" "$ROOT/target/debug/kernel-config"; do
    [ -x "$c" ] && { KCONFIG_BIN=$c; break; }
  done
fi
if [ -n "$KCONFIG_BIN" ] && [ -x "$KCONFIG_BIN" ]; then
  log "kernel-config check --config $KDIR/config --features base,vsock,container (informative):"
  "$KCONFIG_BIN" check --config "$KDIR/config" --features base,vsock,container >&2 || true
else
  log "kernel-config binary not found: skipping the config check"
fi

# --- initramfs, cached by (agent binary, kernel, this script)
KEY=$( { sha256sum < "$AGENT"; echo "$KVER"; sha256sum < "$0"; } | sha256sum | cut -c1-24)
INITRD=$CACHE/initrd/$KVER-$KEY.img
if [ ! -s "$INITRD" ]; then
  log "building the initramfs ($INITRD)"
  R=$(mktemp -d)
  trap 'rm -rf "$R"' EXIT
  mkdir -p "$R"/{bin,dev,proc,sys,run,tmp,etc,lib/modules,lib64,lib/x86_64-linux-gnu}
  # guest-agent as /init, without debug info (smaller initramfs, faster TCG boot).
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$AGENT" "$R/init"
  else
    cp "$AGENT" "$R/init"
  fi
  chmod 0755 "$R/init"
  # Its shared libraries (glibc and friends) and the dynamic loader.
  for lib in $(ldd "$AGENT" | grep -o '/[^ ]*' | sort -u); do
    case "$lib" in
      */ld-linux*) cp -L "$lib" "$R/lib64/$(basename "$lib")" ;;
      *) cp -L "$lib" "$R/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
    esac
  done
  # busybox for debugging from the console (not needed by the agent).
  if [ -x /bin/busybox ]; then
    cp /bin/busybox "$R/bin/busybox"
    for a in sh ls cat mount ps ip dmesg; do ln -s busybox "$R/bin/$a"; done
  fi
  cp "$KDIR"/modules/*.ko "$KDIR/modules/load" "$R/lib/modules/" 2>/dev/null || true
  mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
  echo "sealpod-guest" > "$R/etc/hostname"
  (cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$R"; trap - EXIT
  # Keep the cache small: the 3 newest initramfs images.
  ls -1t "$CACHE"/initrd/*.img 2>/dev/null | tail -n +4 | xargs -r rm -f
fi
log "kernel $KVER, initramfs $(du -h "$INITRD" | cut -f1)"
echo "KVER=$KVER"
echo "KERNEL=$KDIR/vmlinuz"
echo "INITRD=$INITRD"
