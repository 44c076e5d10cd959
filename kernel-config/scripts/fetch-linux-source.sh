#!/usr/bin/env bash
# fetch-linux-source.sh SERIES CACHE_DIR
#
# Makes a pristine, Kconfig-only copy of Debian's linux-source-SERIES tree in
# CACHE_DIR/linux-source-SERIES and prints that path on stdout (the only thing
# printed on stdout; progress goes to stderr).
#
# Why: kernel-config's real-tree test (tests/kconfig_tree.rs) validates the
# fragments with the kernel's own Kconfig (`make defconfig`, merge_config.sh,
# `make olddefconfig`). Only the files Kconfig needs are extracted (Kconfig*,
# Makefile*, Kbuild*, scripts/, arch/x86/configs/): ~40 MB instead of 1.7 GB,
# and the resulting .config is the same as with the full tree.
#
# Idempotent and safe to run concurrently: the second run finds the finished
# tree (marker file .sealpod-complete) and prints it at once; concurrent runs
# serialise on a lock file. Installs the build tools Kconfig needs
# (flex bison bc build-essential xz-utils) with apt-get if they are missing,
# and runs `apt-get update` only when a package cannot be found.
#
# Needs: root (for apt-get) unless everything is already there; network access
# to the Debian mirror of /etc/apt/sources.list (linux-source-6.12 is in
# bookworm-security).
set -euo pipefail

series=${1:?usage: fetch-linux-source.sh SERIES CACHE_DIR   (e.g. 6.12 /var/cache/sealpod/kernel-src)}
cache=${2:?usage: fetch-linux-source.sh SERIES CACHE_DIR}
pkg="linux-source-$series"
tree="$cache/$pkg"

log() { echo "fetch-linux-source: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$cache" || die "cannot create cache directory $cache"
exec 9>"$cache/.lock-$series"
flock 9

if [ -f "$tree/.sealpod-complete" ]; then
    echo "$tree"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed (is the Debian mirror reachable?)"
        apt_updated=1
    fi
}

# 1. Tools Kconfig needs: flex/bison (parser of scripts/kconfig), bc, make, a C compiler, xz.
missing=()
for tool_pkg in flex:flex bison:bison bc:bc make:build-essential gcc:build-essential xz:xz-utils; do
    tool=${tool_pkg%%:*}
    command -v "$tool" >/dev/null 2>&1 || missing+=("${tool_pkg#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing tools (${missing[*]}) and not root: run apt-get install -y flex bison bc build-essential xz-utils"
    # One apt at a time: the lock above is per series, and two series fetched at
    # once (the tests do) would otherwise both run apt-get install (dpkg lock).
    exec 8>"$cache/.lock-apt"
    flock 8
    # shellcheck disable=SC2207
    pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing ${pkgs[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2; then
        apt_update
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed"
    fi
fi

# 2. The source tarball: from the installed package if there is one, else from the
#    .deb, downloaded without installing it (no 150 MB in /usr/src).
dl="$cache/.download-$series"
rm -rf "$dl"
installed="/usr/src/$pkg.tar.xz"
if [ -f "$installed" ] && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
    version=$(dpkg-query -W -f='${Version}' "$pkg")
    source_tarball() { cat "$installed"; }
    log "using the installed $installed"
else
    mkdir -p "$dl"
    chown _apt "$dl" 2>/dev/null || true # lets apt download sandboxed (avoids a warning as root)
    log "apt-get download $pkg"
    if ! (cd "$dl" && apt-get download -qq "$pkg" >&2); then
        apt_update
        (cd "$dl" && apt-get download -qq "$pkg" >&2) || die "apt-get download $pkg failed (bookworm-security must be in the apt sources)"
    fi
    deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
    [ -n "$deb" ] || die "apt-get download produced no $pkg .deb in $dl"
    version=$(dpkg-deb -f "$deb" Version)
    source_tarball() { dpkg-deb --fsys-tarfile "$deb" | tar -xO -f - --wildcards "*/usr/src/$pkg.tar.xz"; }
fi

# 3. Stream the tarball -> only the files Kconfig needs, into a temp dir, then rename
#    into place (a killed run leaves no half tree behind the marker).
tmp="$cache/.extract-$series.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
log "extracting the Kconfig files of $pkg $version (xz decompression takes 20-150 s)"
source_tarball |
    tar -xJ -f - -C "$tmp" --wildcards \
        '*Kconfig*' '*/scripts/*' '*Makefile*' '*/arch/x86/configs/*' '*Kbuild*'
[ -f "$tmp/$pkg/Makefile" ] || die "the $pkg tarball did not contain $pkg/Makefile"
printf 'package=%s\nversion=%s\n' "$pkg" "$version" >"$tmp/$pkg/.sealpod-complete"
rm -rf "$tree"
mv "$tmp/$pkg" "$tree"
rm -rf "$tmp" "$dl"
log "ready: $tree ($(du -sh "$tree" | cut -f1))"
echo "$tree"
