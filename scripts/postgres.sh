#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for httpay's ledger tests and benchmarks.
#
#   scripts/postgres.sh install           find the server binaries (apt-get install postgresql if absent);
#                                         prints their folder
#   scripts/postgres.sh start DIR PORT    init a cluster in DIR once, start it on 127.0.0.1:PORT (unix socket
#                                         inside DIR), create role and database `httpay`; prints the DSN
#   scripts/postgres.sh dsn DIR           print the DSN of the cluster in DIR
#   scripts/postgres.sh stop DIR          stop it (a no-op when it is not running)
#
# Every command is idempotent. PostgreSQL refuses to run as root, so as root the cluster is owned
# and run by the `postgres` system user (created when missing); DIR's parent folders must be
# searchable by it (a folder under /tmp is). Logs go to stderr; stdout carries only the answer.
# Environment: PG_START_TIMEOUT (seconds, default 60), PG_OPTS (extra `postgres` options).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-lock.sh"

START_TIMEOUT="${PG_START_TIMEOUT:-60}"
RUN_USER=postgres

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

bindir_of() {
    # A folder holding all three server programs, or nothing.
    local d="$1"
    [[ -x "$d/pg_ctl" && -x "$d/initdb" && -x "$d/postgres" ]] && echo "$d"
}

find_bindir() {
    local p d
    if p="$(command -v pg_ctl 2>/dev/null)"; then
        # Follow symlinks (e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl) so
        # initdb and postgres come from the same version.
        bindir_of "$(dirname "$(readlink -f "$p")")" && return 0
        bindir_of "$(dirname "$p")" && return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        bindir_of "$d" && return 0
    done
    return 1
}

install_server() {
    if find_bindir >/dev/null; then return 0; fi
    with_install_lock install_server_locked
}

install_server_locked() {
    if find_bindir >/dev/null; then return 0; fi
    command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries (pg_ctl, initdb, postgres) and no apt-get to install them; install PostgreSQL and put its bin folder on PATH"
    [[ "$(id -u)" == "0" ]] || die "no PostgreSQL server binaries found and not root: run 'apt-get install postgresql' as root"
    log "installing Debian's postgresql package (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    find_bindir >/dev/null || die "postgresql installed but pg_ctl/initdb/postgres not found under /usr/lib/postgresql/*/bin"
}

as_owner() {
    # Run a command as the cluster's owner: ourselves, or the postgres user when we are root.
    if [[ "$(id -u)" == "0" ]]; then
        runuser -u "$RUN_USER" -- "$@"
    else
        "$@"
    fi
}

ensure_run_user() {
    [[ "$(id -u)" == "0" ]] || return 0
    if ! id -u "$RUN_USER" >/dev/null 2>&1; then
        log "creating system user $RUN_USER"
        useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$RUN_USER" \
            || die "could not create the system user $RUN_USER"
    fi
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

dsn() {
    local dir="$1"
    [[ -f "$dir/password" && -f "$dir/port" ]] || die "no cluster started in $dir yet: run 'scripts/postgres.sh start $dir PORT'"
    echo "postgresql://httpay:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/httpay"
}

running() {
    local bin="$1" dir="$2"
    [[ -f "$dir/data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

init_cluster() {
    local bin="$1" dir="$2"
    [[ -f "$dir/data/PG_VERSION" ]] && return 0
    log "initializing a cluster in $dir/data"
    rm -rf "$dir/data"
    mkdir -p "$dir/data" "$dir/sock"
    if [[ ! -f "$dir/password" ]]; then
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/password")
    fi
    if [[ "$(id -u)" == "0" ]]; then
        chown -R "$RUN_USER:" "$dir"
        as_owner test -w "$dir/data" \
            || die "user $RUN_USER cannot write $dir/data: its parent folders must be searchable by $RUN_USER (use a folder under /tmp)"
    fi
    chmod 700 "$dir/data"
    # Local (unix socket) connections are trusted: only the owner can reach the socket folder.
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >>"$dir/setup.log" 2>&1 \
        || { tail -n 30 "$dir/setup.log" >&2; die "initdb failed"; }
    # Single-user mode creates the role and database before the server ever listens.
    printf "CREATE ROLE httpay LOGIN PASSWORD '%s';\nCREATE DATABASE httpay OWNER httpay;\n" "$(cat "$dir/password")" \
        | as_owner "$bin/postgres" --single -D "$dir/data" postgres >>"$dir/setup.log" 2>&1 \
        || { tail -n 30 "$dir/setup.log" >&2; die "creating role and database httpay failed"; }
}

start() {
    local dir port bin
    [[ $# -eq 2 ]] || die "usage: scripts/postgres.sh start DIR PORT"
    [[ "$2" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$2'"
    dir="$(abs_dir "$1")"
    port="$2"
    install_server
    bin="$(find_bindir)"
    ensure_run_user
    init_cluster "$bin" "$dir"
    if running "$bin" "$dir"; then
        if [[ "$(cat "$dir/port" 2>/dev/null)" == "$port" ]]; then
            dsn "$dir"
            return 0
        fi
        log "restarting on port $port"
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    fi
    echo "$port" >"$dir/port"
    touch "$dir/server.log"
    if [[ "$(id -u)" == "0" ]]; then chown "$RUN_USER:" "$dir/server.log"; fi
    # shellcheck disable=SC2086  # PG_OPTS is a list of options
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock ${PG_OPTS:-}" start >&2 \
        || { tail -n 30 "$dir/server.log" >&2; die "the server did not start on 127.0.0.1:$port within ${START_TIMEOUT}s (log: $dir/server.log)"; }
    dsn "$dir"
}

stop() {
    local dir bin
    [[ $# -eq 1 ]] || die "usage: scripts/postgres.sh stop DIR"
    [[ -d "$1" ]] || return 0
    dir="$(abs_dir "$1")"
    bin="$(find_bindir)" || return 0
    if running "$bin" "$dir"; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "$START_TIMEOUT" stop >&2
    fi
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    install) install_server; find_bindir ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    dsn) dsn "$(abs_dir "${1:?usage: scripts/postgres.sh dsn DIR}")" ;;
    *) die "usage: scripts/postgres.sh install | start DIR PORT | dsn DIR | stop DIR" ;;
esac
