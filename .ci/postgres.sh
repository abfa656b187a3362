# Sourced by .ci/run: start a throwaway local PostgreSQL server for the results-store tests and
# export CYTOMSC_TEST_PG_URL (tests/test_store.py and tests/test_history_cli.py use it, and skip
# with a reason without it). Installs Debian's `postgresql` package when no server binaries are
# there and we are root. The server listens on a Unix socket in a private temporary folder only
# (no TCP port), keeps its data there, and is stopped when the calling script exits.

_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

_pg_start() {
  local bin run=()
  bin="$(_pg_bin)"
  if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql (Debian package) for the results-store tests"
    apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql >/dev/null || return 1
    bin="$(_pg_bin)"
  fi
  [ -n "$bin" ] || { echo "no PostgreSQL server binaries (package postgresql)"; return 1; }
  PG_TMP="$(mktemp -d /tmp/cytomsc-pg.XXXXXX)"
  if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    chown postgres: "$PG_TMP" && run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$PG_TMP/initdb.log" 2>&1 || { cat "$PG_TMP/initdb.log"; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
    -o "-k $PG_TMP -c listen_addresses= -c fsync=off -c full_page_writes=off" start \
    >/dev/null || { cat "$PG_TMP/server.log"; return 1; }
  PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_TMP/data" -m fast -w stop)
  "${run[@]}" "$bin/createdb" -h "$PG_TMP" -U postgres cytomsc_test || return 1
  export CYTOMSC_TEST_PG_URL="postgresql+psycopg://postgres@/cytomsc_test?host=$PG_TMP"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running for the tests"
}

_pg_stop() {
  if [ -n "${PG_STOP:-}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${PG_TMP:-}" ]; then rm -rf "$PG_TMP"; fi
}

if _pg_start; then
  trap _pg_stop EXIT
else
  _pg_stop
  if [ "${CI:-}" = true ]; then
    echo "error: could not start PostgreSQL for the results-store tests" >&2
    exit 1
  fi
  echo "warning: no PostgreSQL server; its tests will be skipped" >&2
fi
