#!/usr/bin/env bash
# Install one Debian package the project needs from the system, where that can be done.
#   scripts/apt_install.sh PACKAGE COMMAND 'HINT'
# Exits 0 at once when COMMAND is already on PATH (or in /usr/sbin). Otherwise, as root with apt-get, runs
# `apt-get update` (a failure, e.g. offline, does not stop the attempt: the package lists already here are tried)
# and installs PACKAGE. Where it cannot (no root, no apt-get, macOS) or the install fails, it
# prints one line ending in HINT (what happens without the package) and still exits 0: the tests that need the
# package fail with their own message, they are never skipped.
set -u
pkg="$1"; cmd="$2"; hint="$3"
command -v "$cmd" >/dev/null 2>&1 && exit 0
[ -x "/usr/sbin/$cmd" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || echo "make: apt-get update failed; trying the package lists already here" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 && exit 0
  echo "make: could not install $pkg; $hint" >&2
else
  echo "make: $cmd is not installed and cannot be installed here (needs root and apt-get; e.g. apt-get install $pkg); $hint" >&2
fi
exit 0
