#!/usr/bin/env bash
# Finds or starts a Postgres server and prints a URL for it.
#
#   scripts/db.sh              URL of the server's "postgres" database (tests
#                              create their own databases from there)
#   scripts/db.sh minigate     URL of database "minigate", created if missing
#   scripts/db.sh stop         stop the private cluster in .pg/ (make db-stop)
#
# Order: $DATABASE_URL if set; else postgres@127.0.0.1:5432; else a private
# cluster in .pg/ (port 55432) started with this machine's PostgreSQL
# binaries, installing the "postgresql" package with apt-get when there are
# none. Progress goes to stderr; only the URL goes to stdout.
# MINIGATE_PG_PRIVATE=1 skips 5432 (use the private cluster anyway);
# MINIGATE_PG_DIR and MINIGATE_PG_PORT move the private cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DBNAME=${1:-}
PORT=${MINIGATE_PG_PORT:-55432}
PGDIR=${MINIGATE_PG_DIR:-$ROOT/.pg}
PROBE="$ROOT/.pg-probe"
say() { echo "db.sh: $*" >&2; }

# initdb and postgres refuse to run as root: run them as the postgres user.
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi

find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  return 1
}

if [ "$DBNAME" = stop ]; then
  if [ ! -f "$PGDIR/data/postmaster.pid" ]; then
    say "no private cluster is running in $PGDIR"; exit 0
  fi
  BIN=$(find_bin) || { say "no pg_ctl found to stop $PGDIR/data"; exit 1; }
  say "stopping the private cluster in $PGDIR/data"
  "${AS[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >&2
  exit 0
fi

if [ ! -x "$PROBE" ]; then say "building the Postgres probe (internal/tools/pgprobe)"; fi
go build -o "$PROBE" "$ROOT/internal/tools/pgprobe"

emit() { # $1 = server URL
  say "using Postgres at $(echo "$1" | sed -E 's|^postgres(ql)?://([^@/]*@)?([^/?]*).*|\3|')${DBNAME:+, database $DBNAME}"
  if [ -n "$DBNAME" ]; then "$PROBE" -create "$DBNAME" "$1"; else echo "$1"; fi
}

if [ -n "${DATABASE_URL:-}" ]; then
  if "$PROBE" "$DATABASE_URL"; then emit "$DATABASE_URL"; exit 0; fi
  say "DATABASE_URL is set but not reachable"; exit 1
fi

DEFAULT="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
if [ -z "${MINIGATE_PG_PRIVATE:-}" ] && "$PROBE" "$DEFAULT" 2>/dev/null; then emit "$DEFAULT"; exit 0; fi

PRIVATE="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"
if "$PROBE" "$PRIVATE" 2>/dev/null; then emit "$PRIVATE"; exit 0; fi

if ! BIN=$(find_bin); then
  say "no PostgreSQL binaries found; installing the postgresql package with apt-get"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  BIN=$(find_bin) || { say "PostgreSQL binaries still missing after install"; exit 1; }
  # The package may have started its own cluster on 5432.
  if [ -z "${MINIGATE_PG_PRIVATE:-}" ] && "$PROBE" -wait 5s "$DEFAULT" 2>/dev/null; then emit "$DEFAULT"; exit 0; fi
fi

if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PGDIR" --shell /bin/sh postgres
fi
mkdir -p "$PGDIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; fi
if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
  say "initialising a private cluster in $PGDIR/data"
  "${AS[@]}" "$BIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >"$PGDIR/initdb.log" 2>&1 ||
    { cat "$PGDIR/initdb.log" >&2; exit 1; }
fi
say "starting the private cluster on 127.0.0.1:$PORT (make db-stop stops it)"
"${AS[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $PGDIR -c max_connections=300 -c fsync=on" start >&2 ||
  { tail -20 "$PGDIR/server.log" >&2; exit 1; }
"$PROBE" -wait 10s "$PRIVATE" >/dev/null
emit "$PRIVATE"
