#!/usr/bin/env bash
# Installs the services the multi-node crates' tests start on their own,
# when missing: Debian's `redis-server` (for chat-broker-redis) and
# `postgresql` (for chat-store-postgres).
#
# Run with:
#   bash scripts/services-setup.sh
#   cargo test -p chat-broker-redis -p chat-store-postgres
#
# Idempotent and quiet: does nothing when both are there. Needs root (or
# sudo) for apt-get. It starts nothing: each test starts its own throw-away
# server on a free port (and stops it), so the Debian services that the
# packages enable are not needed; on machines without systemd they do not
# run anyway.
#
# How the tests find the binaries:
#   redis-server  $REDIS_SERVER, else `redis-server` on PATH, else
#                 /usr/bin/redis-server
#   PostgreSQL    $PG_BIN (a folder with initdb and postgres), else the
#                 newest /usr/lib/postgresql/<version>/bin
# PostgreSQL's initdb refuses to run as root: when the tests run as root
# they run initdb and postgres as the `postgres` user (created by the
# package) through `runuser`.
set -euo pipefail

log() { echo "services-setup: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
if [ -z "${REDIS_SERVER:-}" ] && ! command -v redis-server >/dev/null 2>&1 \
    && [ ! -x /usr/bin/redis-server ]; then
    missing+=(redis-server)
fi
if [ -z "${PG_BIN:-}" ] && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    missing+=(postgresql)
fi

if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq >&2
    # policy-rc.d-less containers may try to start the services; that is
    # harmless (and fails quietly without systemd).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

pg=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
log "redis-server: $(command -v redis-server || echo /usr/bin/redis-server), postgres: ${PG_BIN:-${pg%/postgres}}"
