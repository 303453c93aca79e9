#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server: a cluster in a temporary directory, listening on a free
# local port with password authentication, a role `lenet5` (password `lenet5`) owning a database `optuna`. The
# command sees its URL, in the form the Python guide writes, as $LENET5_TEST_POSTGRES. The server is stopped and
# its directory removed when the command ends, whatever happens: nothing is left behind.
#
#   scripts/with-postgres.sh pytest python/tests/test_optuna_example.py
#
# Needs PostgreSQL's server programs (Debian: apt-get install postgresql). Run as root, the server runs as the
# `postgres` user that package creates (PostgreSQL refuses to run as root).
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] && command -v pg_ctl >/dev/null 2>&1; then
  bin=$(dirname "$(command -v pg_ctl)")
fi
if [ -z "$bin" ]; then
  echo "with-postgres: no PostgreSQL server programs found (Debian: apt-get install postgresql)" >&2
  exit 2
fi

as_server=()
if [ "$(id -u)" = 0 ]; then
  as_server=(runuser -u postgres --)
fi
dir=$(mktemp -d /tmp/lenet5-postgres.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo lenet5 > "$dir/password"
chmod 644 "$dir/password"
"${as_server[@]}" "$bin/initdb" -D "$dir/data" -U lenet5 --pwfile="$dir/password" --auth-local=trust \
  --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
"${as_server[@]}" "$bin/createdb" -h "$dir" -p "$port" -U lenet5 optuna

export LENET5_TEST_POSTGRES="postgresql+psycopg://lenet5:lenet5@127.0.0.1:$port/optuna"
"$@"
