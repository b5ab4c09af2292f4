# shellcheck shell=bash
# Shared helpers for the scripts in scripts/ (sourced, never run).
#
# - log/die: short progress lines on stderr, prefixed with the script's name.
# - CACHE_DIR: /work/main/.cache (the repo's git-ignored cache; override with VFS_CACHE_DIR).
# - Private apt configurations ("apt_private NAME SUITE..."): apt-get/apt-cache run against a
#   sources list, index lists, package cache and (empty) dpkg status that live under
#   .cache/apt/NAME/, so packages of other suites (trixie, bookworm-backports) can be
#   downloaded without touching the machine's apt sources, lists, pins or lock.  The mirror URI
#   is the one the machine already uses for Debian (read from
#   /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list, never hard-coded), and the
#   indexes are verified with Debian's archive keyring (see keyring_for_suite).
#   The machine's apt.conf.d is still read (proxies, auth, mirror quirks) but its
#   update/dpkg hooks are cleared and its pins (preferences) are ignored.

set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$SCRIPTS_DIR/.." && pwd)
CACHE_DIR=${VFS_CACHE_DIR:-$REPO_DIR/.cache}
PROG=${PROG:-$(basename "$0" .sh)}
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# sha256 of stdin, hex only.
sha_stdin() { sha256sum | cut -c1-64; }

# A content hash of a directory tree (paths, modes, symlink targets, file contents).
# Prints "none" when the directory does not exist.
tree_hash() {
    local dir=$1
    [ -d "$dir" ] || { echo none; return; }
    (
        cd "$dir"
        find . -mindepth 1 -printf '%P\t%y\t%m\t%l\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum
    ) | sha_stdin
}

# ---------------------------------------------------------------------------------------
# Debian mirror of this machine.

# Prints the URI of the machine's main Debian source (the one serving bookworm/stable, not
# the security archive).  deb822 files first, then one-line sources.list files.
debian_mirror_uri() {
    local f uri
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled !~ /^[Nn]o/ && uri != "" &&
                    suites ~ /(^| )(bookworm|stable)( |$)/ && !found) { print uri; found = 1 }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 " " }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 " " }
            tolower($1) == "enabled:" { enabled = $2 }
            END { flush() }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i+1) == "bookworm" || $(i+1) == "stable") { print $i; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    die "cannot find the machine's Debian (bookworm) source in /etc/apt/sources.list{,.d/}"
}

# ---------------------------------------------------------------------------------------
# Keyrings.
#
# Debian's archive keyring (/usr/share/keyrings/debian-archive-keyring.gpg, package
# debian-archive-keyring) holds the keys of the releases known when it was built.  Bookworm's
# 2023.3+deb12u2 (point release 12.11, April 2025) added trixie's keys; older bookworm
# installs lack them.  When the installed keyring lacks the keys for SUITE we do not fetch
# keys from anywhere unauthenticated: we download bookworm's current debian-archive-keyring
# .deb through a private bookworm configuration (so it is verified with the bookworm keys the
# machine already trusts), unpack it under .cache/apt/keyring/ and use that keyring.

# Prints the path of a keyring that can verify SUITE (bookworm, bookworm-backports, trixie).
keyring_for_suite() {
    local suite=${1%%-*} kr=${VFS_SYSTEM_KEYRINGS:-/usr/share/keyrings}
    local sys=$kr/debian-archive-keyring.gpg
    if [ -f "$sys" ] && [ -f "$kr/debian-archive-$suite-automatic.gpg" ]; then
        echo "$sys"; return 0
    fi
    [ "$suite" != bookworm ] || die "no bookworm keyring at $sys (install debian-archive-keyring)"
    local kdir=$CACHE_DIR/apt/keyring
    if [ ! -f "$kdir/usr/share/keyrings/debian-archive-$suite-automatic.gpg" ]; then
        log "installed debian-archive-keyring lacks $suite's keys; fetching bookworm's current one"
        apt_private_bookworm
        local deb
        deb=$(apt_private_download bookworm debian-archive-keyring)
        rm -rf "$kdir"; mkdir -p "$kdir"
        dpkg -x "$deb" "$kdir"
        [ -f "$kdir/usr/share/keyrings/debian-archive-$suite-automatic.gpg" ] ||
            die "bookworm's current debian-archive-keyring has no $suite keys either"
    fi
    echo "$kdir/usr/share/keyrings/debian-archive-keyring.gpg"
}

# ---------------------------------------------------------------------------------------
# Private apt configurations.

# apt_private NAME SUITE...: create (if needed) .cache/apt/NAME with a sources.list for the
# SUITEs (component main, amd64) on this machine's mirror; prints nothing.  The index is
# fetched lazily by apt_private_update.
apt_private() {
    local name=$1; shift
    local d=$CACHE_DIR/apt/$name uri arch keyring suite src conf
    uri=$(debian_mirror_uri)
    arch=$(dpkg --print-architecture)
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/dl"
    src=""
    for suite in "$@"; do
        keyring=$(keyring_for_suite "$suite")
        src+="deb [arch=$arch signed-by=$keyring] $uri $suite main"$'\n'
    done
    conf="// generated by scripts/lib/common.sh: private apt configuration '$name'
Dir::Etc::SourceList \"$d/sources.list\";
Dir::Etc::SourceParts \"/dev/null\";
Dir::Etc::Preferences \"/dev/null\";
Dir::Etc::PreferencesParts \"/dev/null\";
Dir::State \"$d\";
Dir::State::Lists \"$d/lists\";
Dir::State::status \"$d/status\";
Dir::Cache \"$d/cache\";
Dir::Cache::pkgcache \"pkgcache.bin\";
Dir::Cache::srcpkgcache \"\";
APT::Architecture \"$arch\";
#clear APT::Architectures;
APT::Architectures { \"$arch\"; };
Acquire::Languages \"none\";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
"
    # apt downloads as user _apt when it can reach the target directories; otherwise it
    # falls back to root with a warning.  Avoid the warning by deciding here.
    if id _apt >/dev/null 2>&1 && chown -R _apt:root "$d/lists/partial" "$d/cache/archives/partial" "$d/dl" 2>/dev/null &&
        runuser -u _apt -- test -w "$d/dl" 2>/dev/null && runuser -u _apt -- test -w "$d/lists/partial" 2>/dev/null; then
        :
    else
        conf+="APT::Sandbox::User \"root\";"$'\n'
    fi
    [ -f "$d/status" ] || : >"$d/status"
    # A changed source list (new mirror, new keyring) invalidates the downloaded index.
    if [ "$(cat "$d/sources.list" 2>/dev/null)" != "${src%$'\n'}" ]; then
        printf '%s' "$src" >"$d/sources.list"
        rm -f "$d/lists/"*_* "$d/updated"
    fi
    printf '%s' "$conf" >"$d/apt.conf"
}

# The one private bookworm configuration all scripts share (same suites everywhere: a
# different suite list for the same NAME would invalidate its index).
apt_private_bookworm() { apt_private bookworm bookworm bookworm-updates bookworm-backports; }

# apt-get / apt-cache with private configuration NAME.
apt_get_p()   { local d=$CACHE_DIR/apt/$1; shift; apt-get -q -c "$d/apt.conf" "$@"; }
apt_cache_p() { local d=$CACHE_DIR/apt/$1; shift; apt-cache -c "$d/apt.conf" "$@"; }

# apt_private_update NAME [force]: fetch the index once (or again when forced).
apt_private_update() {
    local d=$CACHE_DIR/apt/$1
    exec 7>"$d/.flock"; flock 7   # concurrent runs of these scripts wait for each other
    if [ "${2:-}" = force ] || [ ! -e "$d/updated" ]; then
        log "apt update (private index '$1': $(awk '{ print $(NF-1) }' "$d/sources.list" | paste -sd' ' -))"
        if ! apt_get_p "$1" -qq update >"$d/update.log" 2>&1; then
            cat "$d/update.log" >&2
            die "private apt update '$1' failed"
        fi
        grep -E '^(W|E|N): ' "$d/update.log" >&2 || true
        touch "$d/updated"
    fi
    exec 7>&-
}

# apt_private_candidate NAME PKG: prints the candidate version (empty if unknown).
apt_private_candidate() {
    apt_cache_p "$1" policy "$2" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

# apt_private_version NAME PKG PREFIX: the newest version of PKG in the index whose upstream
# part starts with PREFIX (e.g. 10.0 matches 1:10.0.2+ds-2~bpo12+1); empty if none.
apt_private_version() {
    apt_cache_p "$1" madison "$2" 2>/dev/null |
        awk -v p="$3" '{ v = $3; u = v; sub(/^[0-9]+:/, "", u); if (index(u, p ".") == 1 || u == p) print v }' |
        head -n1
}

# apt_private_download NAME PKG [PREFIX]: downloads PKG's candidate (or, with PREFIX, the newest
# version of that upstream series) into .cache/debs/ (once; verified against the signed index
# by apt) and prints the .deb path.  If the index is stale (the version vanished from the
# mirror) it is refreshed once and the download retried.
apt_private_download() {
    local name=$1 pkg=$2 series=${3:-} d=$CACHE_DIR/apt/$1 debs=$CACHE_DIR/debs ver file try
    mkdir -p "$debs"
    apt_private_update "$name"
    for try in 1 2; do
        if [ -n "$series" ]; then ver=$(apt_private_version "$name" "$pkg" "$series")
        else ver=$(apt_private_candidate "$name" "$pkg"); fi
        if [ -n "$ver" ]; then
            file=$debs/${pkg}_${ver#*:}_$(apt_cache_p "$name" show "$pkg=$ver" | awk '/^Architecture:/ { print $2; exit }').deb
            if [ -s "$file" ]; then echo "$file"; return 0; fi
            exec 7>"$d/.flock"; flock 7
            if [ -s "$file" ]; then exec 7>&-; echo "$file"; return 0; fi
            log "downloading $pkg $ver ($(apt_cache_p "$name" show "$pkg=$ver" 2>/dev/null | awk '/^Size:/ { printf "%.1f MiB", $2 / 1048576; exit }'))"
            rm -f "$d/dl/"*.deb
            if (cd "$d/dl" && apt_get_p "$name" -qq download "$pkg=$ver" >"$d/download.log" 2>&1); then
                mv "$d/dl/"*.deb "$file.tmp" && mv "$file.tmp" "$file"
                exec 7>&-
                echo "$file"; return 0
            fi
            exec 7>&-
            cat "$d/download.log" >&2
        fi
        [ "$try" = 1 ] || break
        log "package $pkg not found or not downloadable; refreshing the index"
        apt_private_update "$name" force
    done
    die "cannot download $pkg with private apt configuration '$name'"
}

# apt_private_find NAME REGEX: package names in the index matching REGEX (one a line).
apt_private_find() {
    apt_private_update "$1"
    apt_cache_p "$1" search --names-only "$2" 2>/dev/null | awk '{ print $1 }' | LC_ALL=C sort -u
}
