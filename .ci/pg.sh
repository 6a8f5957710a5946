#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite: CI (.ci/run) and developers use the same one.
#
#   eval "$(.ci/pg.sh start)"     # new cluster in a temp dir; prints the SAAN_HPO_TEST_PG_* exports
#   python -m pytest -q -m postgres
#   .ci/pg.sh restart             # what the pg_restart fixture does (fast shutdown, then start)
#   .ci/pg.sh stop                # stop, keep the data dir
#   .ci/pg.sh destroy             # stop and delete the temp dir
#
# start takes an optional directory (it must be empty or missing); every other subcommand takes
# the data dir as an argument or from SAAN_HPO_TEST_PG_DATA. The port is the first free one from
# SAAN_HPO_TEST_PG_PORT (default 54329). Durability is off (fsync, synchronous_commit,
# full_page_writes): the data is disposable and the tests are faster for it.
# PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

pg_bin() {
    local bin
    bin=$(find /usr/lib/postgresql/*/bin -maxdepth 1 -name initdb 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$bin" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    dirname "$bin"
}

# Run a server command as `postgres` when we are root, as ourselves otherwise.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

data_dir() {
    local data=${1:-${SAAN_HPO_TEST_PG_DATA:-}}
    [[ -n "$data" ]] || die "give the data dir or set SAAN_HPO_TEST_PG_DATA"
    [[ -f "$data/PG_VERSION" ]] || die "$data is not a PostgreSQL data dir"
    printf '%s\n' "$data"
}

cmd_start() {
    local root=${1:-}
    if [[ -z "$root" ]]; then
        root=$(mktemp -d "${TMPDIR:-/tmp}/saan-hpo-pg.XXXXXX")
    else
        mkdir -p "$root"
        [[ -z "$(ls -A "$root")" ]] || die "$root is not empty"
    fi
    root=$(cd "$root" && pwd)
    local bin data=$root/data user=saan_hpo db=saan_hpo_test password port
    bin=$(pg_bin)
    [[ $(id -u) -ne 0 ]] || chown postgres: "$root"
    chmod 700 "$root"

    port=${SAAN_HPO_TEST_PG_PORT:-54329}
    while port_in_use "$port"; do port=$((port + 1)); done
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

    as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$root/initdb.log" 2>&1 \
        || { cat "$root/initdb.log" >&2; die "initdb failed"; }
    cat >>"$data/postgresql.conf" <<EOF

# saan-hpo test server (.ci/pg.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$root'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    as_pg "$bin/pg_ctl" -D "$data" -l "$root/server.log" -w -t 60 start >&2 \
        || { cat "$root/server.log" >&2; die "server did not start"; }

    as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$root" -p "$port" -U postgres -d postgres >&2 <<EOF
CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE $db OWNER $user;
-- DROP DATABASE ... WITH (FORCE) ends the sessions left in a test's database, autovacuum's
-- too; PostgreSQL 15 lets a non-superuser end an autovacuum worker only with this role.
GRANT pg_signal_backend TO $user;
EOF

    local self
    self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pg.sh
    cat <<EOF | tee "$root/env.sh"
export SAAN_HPO_TEST_PG_URL='postgresql+psycopg://$user:$password@127.0.0.1:$port/$db'
export SAAN_HPO_TEST_PG_DATA='$data'
export SAAN_HPO_TEST_PG_CTL='$self'
EOF
    echo "pg.sh: PostgreSQL $(as_pg "$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $data" >&2
}

cmd_stop() {
    local data bin
    data=$(data_dir "${1:-}")
    bin=$(pg_bin)
    if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
    fi
}

cmd_restart() {
    local data bin
    data=$(data_dir "${1:-}")
    bin=$(pg_bin)
    as_pg "$bin/pg_ctl" -D "$data" -l "$(dirname "$data")/server.log" -m fast -w -t 60 restart >&2
}

cmd_destroy() {
    # Accepts the data dir or the temp dir above it (what start was given), so a trap can
    # clean up after a start that failed half-way.
    local target=${1:-${SAAN_HPO_TEST_PG_DATA:-}} root
    [[ -n "$target" ]] || die "give the data dir or set SAAN_HPO_TEST_PG_DATA"
    if [[ -f "$target/data/PG_VERSION" ]]; then target=$target/data; fi
    if [[ -f "$target/PG_VERSION" ]]; then
        cmd_stop "$target"
        root=$(dirname "$target")
    else
        root=$target
    fi
    [[ -d "$root" ]] || return 0
    [[ -f "$root/initdb.log" || -z "$(ls -A "$root")" ]] || die "refusing to delete $root: not made by pg.sh start"
    rm -rf -- "$root"
}

case "${1:-}" in
    start | stop | restart | destroy) cmd=$1; shift; "cmd_$cmd" "$@" ;;
    *) die "usage: pg.sh start [DIR] | stop [DATA] | restart [DATA] | destroy [DATA]" ;;
esac
