#!/bin/sh
# Lays out the root filesystem of vdbi's container image (FROM scratch): the static binary and
# the few files a static glibc program and its TLS stack read. Used by the Dockerfile's builder
# stage and by scripts/build-image.sh, so both builds ship the same files.
#
# Usage: scripts/image-rootfs.sh DIR VDBI_BINARY [CA_BUNDLE]
#   CA_BUNDLE defaults to Debian's /etc/ssl/certs/ca-certificates.crt (package ca-certificates).
set -eu
dir="$1" bin="$2" ca="${3:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca" ] || { echo "image-rootfs.sh: no CA bundle at $ca (install ca-certificates)" >&2; exit 1; }
# A static binary has no program interpreter and needs no shared library.
if LC_ALL=C readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  echo "image-rootfs.sh: $bin is dynamically linked; build it with -C target-feature=+crt-static" >&2
  exit 1
fi
rm -rf "$dir"
mkdir -p "$dir/etc/ssl/certs" "$dir/tmp"
chmod 0755 "$dir" "$dir/etc" "$dir/etc/ssl" "$dir/etc/ssl/certs"
chmod 1777 "$dir/tmp"
install -m 0755 "$bin" "$dir/vdbi"
install -m 0644 "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
# uid/gid 65534 (nobody) runs the daemon; root only the NRI plugin (the runtime's socket is root's).
printf '%s\n' 'root:x:0:0:root:/:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' >"$dir/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$dir/etc/group"
# glibc's static resolver: /etc/hosts, then DNS (resolv.conf comes from the runtime).
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$dir/etc/nsswitch.conf"
chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/nsswitch.conf"
