#!/usr/bin/env bash
# Installs the Debian packages the build and tests need (only those missing) and
# builds CivetWeb 1.15 from Debian's source package into build/civetweb.
# Idempotent: a second run with everything present does nothing and prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config dpkg-dev ca-certificates openssl
 liblmdb-dev lmdb-utils libcjson-dev libsqlite3-dev sqlite3 libhiredis-dev
 libssl-dev zlib1g-dev libcurl4-openssl-dev libcmocka-dev
 redis-server nginx apache2 clang libclang-rt-14-dev
 python3 python3-pytest python3-websockets curl procps chromium patch logrotate
 man-db groff-base rpm"
if [ "${ZW_DEPS_EXTRA:-}" != "" ]; then PKGS="$PKGS $ZW_DEPS_EXTRA"; fi
# The browser tests run on Node.js; machines of this project's kind come with it,
# others get Debian's.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  $SUDO apt-get update -qq
  # Services that come with packages (nginx, apache2, redis) must not grab ports
  # here; tests start their own instances.
  echo 'exit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

# CivetWeb from the Debian *source* package, in a private apt state so the
# machine's own sources stay untouched.
CW=build/civetweb
if [ ! -f "$CW/src/civetweb.c" ]; then
  apt_dir="$PWD/build/apt-src"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/sources.list.d" "$CW.tmp"
  echo "deb-src http://deb.debian.org/debian bookworm main" > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -qq
  (cd "$CW.tmp" && apt-get "${opts[@]}" source --download-only -qq civetweb && dpkg-source -x --no-check civetweb_*.dsc src >/dev/null)
  rm -rf "$CW"; mv "$CW.tmp/src" "$CW"; rm -rf "$CW.tmp"
  grep -q 'CIVETWEB_VERSION "1.15' "$CW/include/civetweb.h" || { echo "deps: expected CivetWeb 1.15" >&2; exit 1; }
fi

# Our own patch to CivetWeb (scripts/civetweb.patch): a frame larger than the
# embedder's limit is refused from its header, a started frame has a deadline, and the
# stop flag is read atomically. The applied copy is kept beside the tree, so a changed
# patch replaces the old one (reverse, then apply) without fetching the source again.
PATCH=scripts/civetweb.patch
if ! cmp -s "$PATCH" "$CW/.zw-civetweb.patch"; then
  if [ -f "$CW/.zw-civetweb.patch" ]; then patch -s -R -p1 -d "$CW" < "$CW/.zw-civetweb.patch"; fi
  patch -s -p1 -d "$CW" < "$PATCH"
  cp "$PATCH" "$CW/.zw-civetweb.patch"
fi
