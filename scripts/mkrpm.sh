#!/usr/bin/env bash
# Builds the RPM with rpmbuild (`make rpm`): build/zwibbler-<version>-1.<arch>.rpm with
# the files of scripts/stage.sh and the scriptlets of scripts/rpm/zwibbler.spec.in.
# Runs on Debian with its `rpm` package; the dependencies on shared libraries are
# found by rpmbuild from the binary.
#   BIN=path      binary to package (default build/release/zwibbler)
#   OUT=dir       where the .rpm goes (default build); its path is printed last
#   VERSION=x.y.z package version (default: what `BIN --version` says)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/release/zwibbler}
OUT=${OUT:-build}
[ -x "$BIN" ] || { echo "mkrpm: $BIN is not built (make)" >&2; exit 1; }
command -v rpmbuild >/dev/null || { echo "mkrpm: rpmbuild not found (apt-get install rpm)" >&2; exit 1; }
VERSION=${VERSION:-$("$BIN" --version | awk '{print $2}')}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/zwibbler-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
unitdir=$(rpm --eval '%{?_unitdir}')
unitdir=${unitdir:-/usr/lib/systemd/system}
bash scripts/stage.sh "$work/stage" "$BIN" "$unitdir"
sed -e "s|@VERSION@|$VERSION|" -e "s|@STAGE@|$work/stage|" scripts/rpm/zwibbler.spec.in \
    > "$work/zwibbler.spec"
rpmbuild -bb --quiet \
    --define "_topdir $work/top" \
    --define "_unitdir $unitdir" \
    --define "_rpmdir $work/out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    "$work/zwibbler.spec" >&2
rpm=$(ls "$work"/out/zwibbler-"$VERSION"-1.*.rpm)
cp "$rpm" "$OUT/"
echo "$OUT/$(basename "$rpm")"
