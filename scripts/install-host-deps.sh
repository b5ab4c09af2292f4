#!/usr/bin/env bash
# install-host-deps.sh: install (apt-get, from the machine's configured bookworm sources) the
# host packages the guest/anchor test scripts need:
#   qemu-system-x86     QEMU 7.2 (qemu-system-x86_64); its qemu-system-common ships the C
#                       virtiofsd at /usr/lib/qemu/virtiofsd (an anchor, see fetch-anchors.sh)
#   busybox-static      static busybox (guest userland; build-guest.sh takes the same package
#                       version from the archive, so the host copy is for host-side tests)
#   cpio gzip xz-utils  building the initramfs, decompressing .ko.xz modules
#   fio stress-ng attr acl xfsprogs  guest tools: build-guest.sh copies them (with the
#                       libraries ldd lists) into the guest image, beside util-linux's flock and
#                       fallocate (acl: setfacl/getfacl; xfsprogs for xfs_io: pread/pwrite/mmap/
#                       msync on one open file)
#   debian-archive-keyring  verifies the private bookworm/trixie indexes (lib/common.sh)
#   util-linux coreutils (setsid, runuser, timeout, mkfifo: normally already there)
#   uidmap              newuidmap/newgidmap: --uid-map/--gid-map ranges beyond the user's own ID
#                       (test/vhost/rootless.test.ts)
# Recommends are not installed (no QEMU GUI).  Usage: scripts/install-host-deps.sh (as root).
# A fast no-op when everything is installed: apt is not even started.  Otherwise it installs
# with DEBIAN_FRONTEND=noninteractive, waits for another apt/dpkg run's lock (up to 10 min), and
# runs `apt-get update` first when the machine has no package lists, or once more when the
# install fails (stale lists).  The machine's apt sources are never modified.
set -euo pipefail
PROG=install-host-deps
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

case ${1:-} in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

PKGS=(qemu-system-x86 qemu-system-common busybox-static cpio gzip xz-utils
      debian-archive-keyring util-linux uidmap coreutils fio stress-ng attr acl xfsprogs)

missing=()
for p in "${PKGS[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "all installed: ${PKGS[*]}"
    exit 0
fi
need_root
log "installing: ${missing[*]}"
APT=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
     -o Dpkg::Options::=--force-confold)
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    log "no apt package lists yet: apt-get update"
    "${APT[@]}" update >&2
fi
if ! "${APT[@]}" install --no-install-recommends "${missing[@]}" >&2; then
    log "install failed; refreshing the package lists and retrying once"
    "${APT[@]}" update >&2
    "${APT[@]}" install --no-install-recommends "${missing[@]}" >&2
fi
for p in "${missing[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || die "$p is still not installed"
done
log "done: $(qemu-system-x86_64 --version | head -n1)"
