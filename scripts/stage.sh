#!/usr/bin/env bash
# Lays out the files every package of the server holds (the .deb of mkdeb.sh, the
# .rpm of mkrpm.sh) under a staging root, so both ship the same files:
#   stage.sh ROOT BIN [UNITDIR]
# /usr/bin/zwibbler (stripped), /etc/zwibbler.conf, /etc/logrotate.d/zwibbler, the
# systemd unit in UNITDIR (default /lib/systemd/system), /var/lib/zwibbler and
# /var/log/zwibbler (0750), the man page zwibbler(8) gzipped, and under
# /usr/share/doc/zwibbler/ the README, the docs/ pages and the proxy examples.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$1 bin=$2 unitdir=${3:-/lib/systemd/system}

install -D -m 0755 "$bin" "$root/usr/bin/zwibbler"
strip --strip-unneeded "$root/usr/bin/zwibbler"
install -D -m 0644 conf/zwibbler.conf "$root/etc/zwibbler.conf"
install -D -m 0644 conf/zwibbler.logrotate "$root/etc/logrotate.d/zwibbler"
install -D -m 0644 conf/zwibbler.service "$root$unitdir/zwibbler.service"
install -d -m 0750 "$root/var/lib/zwibbler" "$root/var/log/zwibbler"
install -d -m 0755 "$root/usr/share/man/man8"
# -n: no name or time stamp in the gzip header, so the same page gives the same file.
gzip -9n < man/zwibbler.8 > "$root/usr/share/man/man8/zwibbler.8.gz"
chmod 0644 "$root/usr/share/man/man8/zwibbler.8.gz"
doc=$root/usr/share/doc/zwibbler
install -D -m 0644 README.md "$doc/README.md"
for f in docs/*; do
  [ -f "$f" ] && install -D -m 0644 "$f" "$doc/docs/$(basename "$f")"
done
for f in conf/nginx-*.conf conf/apache-*.conf; do
  [ -f "$f" ] && install -D -m 0644 "$f" "$doc/examples/$(basename "$f")"
done
printf 'zwibbler-server: a Zwibbler collaboration server written in C.\nSee README.md for licensing.\n' > "$doc/copyright"
chmod 0644 "$doc/copyright"
