#!/usr/bin/env bash
# Builds the Debian package with dpkg-deb (`make deb`): the files of scripts/stage.sh
# (/usr/bin/zwibbler, the commented default /etc/zwibbler.conf, a conffile so that
# upgrades keep an edited one, the systemd unit, logrotate, /var/lib/zwibbler and
# /var/log/zwibbler, the man page, the documentation) and the maintainer scripts of
# scripts/deb/ (a zwibbler system user, the service enabled and started where systemd
# runs).
#   BIN=path      binary to package (default build/release/zwibbler)
#   OUT=dir       where the .deb goes (default build); its path is printed last
#   VERSION=x.y.z package version (default: what `BIN --version` says)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/release/zwibbler}
OUT=${OUT:-build}
[ -x "$BIN" ] || { echo "mkdeb: $BIN is not built (make)" >&2; exit 1; }
VERSION=${VERSION:-$("$BIN" --version | awk '{print $2}')}
ARCH=$(dpkg --print-architecture)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/zwibbler-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps expects the debian/<package>/ layout of a source tree.
pkg=$work/debian/zwibbler
mkdir -p "$work/debian"
printf 'Source: zwibbler\n\nPackage: zwibbler\nArchitecture: any\n' > "$work/debian/control"

bash scripts/stage.sh "$pkg" "$BIN"

install -d "$pkg/DEBIAN"
install -m 0755 scripts/deb/postinst scripts/deb/prerm scripts/deb/postrm "$pkg/DEBIAN/"
install -m 0644 scripts/deb/conffiles "$pkg/DEBIAN/conffiles"
depends=$(cd "$work" && dpkg-shlibdeps -O -e "debian/zwibbler/usr/bin/zwibbler" 2>/dev/null |
          sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "mkdeb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    scripts/deb/control.in > "$pkg/DEBIAN/control"

deb=$OUT/zwibbler_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
