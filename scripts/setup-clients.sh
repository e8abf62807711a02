#!/bin/bash
# setup-clients.sh - install the real /proc client battery
# (../shared/clients) and what the project's tool tests need.
# Idempotent; run as root on Debian 12.  Network: apt and PyPI only.
#
#   Debian:  python3 python3-venv util-linux (unshare, setsid, setpriv, mount)
#            procps (ps top free vmstat pmap) fuse3, and through
#            shared/clients/setup.sh: smem smemstat numactl curl
#            prometheus-node-exporter prometheus-process-exporter
#   PyPI:    psutil ps_mem pagemap (pinned by shared/clients/setup.sh) into
#            $BATTERY_VENV, default .venv-clients/ in the project (git-ignored)
#
# Env: BATTERY_VENV (venv path), CLIENTS_DIR (default ../shared/clients
# beside the project).  Run the battery afterwards with the same
# BATTERY_VENV, e.g.
#   BATTERY_VENV=$PWD/.venv-clients ../shared/clients/battery.sh MNT/page_mapcount
set -eu
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS_DIR:-$PROJECT/../shared/clients}
export BATTERY_VENV=${BATTERY_VENV:-$PROJECT/.venv-clients}

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-clients.sh: must run as root (apt-get, and the battery's unshare/mount)" >&2
    exit 1
fi
if [ ! -f "$CLIENTS/setup.sh" ]; then
    echo "setup-clients.sh: $CLIENTS/setup.sh not found (set CLIENTS_DIR to shared/clients)" >&2
    exit 1
fi
CLIENTS=$(cd "$CLIENTS" && pwd)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    python3 python3-venv util-linux procps fuse3 chromium > /dev/null

# apt packages, the services they enable turned off, and the venv
bash "$CLIENTS/setup.sh"

missing=
for c in unshare setsid setpriv mount ps top free vmstat pmap smem smemstat numastat \
         curl prometheus-node-exporter prometheus-process-exporter fusermount3; do
    command -v "$c" > /dev/null || missing="$missing $c"
done
for f in "$BATTERY_VENV/bin/python" "$BATTERY_VENV/bin/ps_mem" "$BATTERY_VENV/bin/pagemap"; do
    [ -x "$f" ] || missing="$missing $f"
done
"$BATTERY_VENV/bin/python" -c 'import psutil' 2> /dev/null || missing="$missing psutil"
if [ -n "$missing" ]; then
    echo "setup-clients.sh: still missing:$missing" >&2
    exit 1
fi
echo "clients ready: BATTERY_VENV=$BATTERY_VENV, battery $CLIENTS/battery.sh"
