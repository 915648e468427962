#!/usr/bin/env bash
# PgBouncer in transaction mode in front of the test PostgreSQL, for the ledger tests.
#
#   scripts/pgbouncer.sh start DIR PORT PG_PORT PASSWORD   install pgbouncer if needed (Debian's package,
#                                                          as root), start it on 127.0.0.1:PORT in front of
#                                                          127.0.0.1:PG_PORT (database and user httpay);
#                                                          prints the DSN to connect through it
#   scripts/pgbouncer.sh stop DIR                          stop it
#
# pool_mode = transaction and a server pool of 2 connections: consecutive transactions of one client
# land on different server connections, so any session state a client relied on would be lost.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-lock.sh"

RUN_USER="${PGBOUNCER_USER:-postgres}"
log() { echo "pgbouncer.sh: $*" >&2; }
die() { log "$*"; exit 1; }

find_bin() {
    command -v pgbouncer 2>/dev/null && return 0
    [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer && return 0
    return 1
}

install() {
    find_bin >/dev/null && return 0
    with_install_lock install_locked
}

install_locked() {
    find_bin >/dev/null && return 0
    command -v apt-get >/dev/null 2>&1 || die "no pgbouncer and no apt-get to install it; install PgBouncer"
    [[ "$(id -u)" == "0" ]] || die "no pgbouncer found and not root: run 'apt-get install pgbouncer' as root"
    log "installing Debian's pgbouncer package (once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends pgbouncer >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends pgbouncer >&2; } \
        || die "apt-get install pgbouncer failed"
    # the package starts a system-wide instance on port 6432: we run our own
    if command -v service >/dev/null 2>&1; then service pgbouncer stop >/dev/null 2>&1 || true; fi
    find_bin >/dev/null || die "pgbouncer installed but not found"
}

as_owner() {
    if [[ "$(id -u)" == "0" ]]; then runuser -u "$RUN_USER" -- "$@"; else "$@"; fi
}

start() {
    [[ $# -eq 4 ]] || die "usage: scripts/pgbouncer.sh start DIR PORT PG_PORT PASSWORD"
    local dir="$1" port="$2" pg_port="$3" password="$4" bin
    install
    bin="$(find_bin)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    (umask 077 && printf '"httpay" "%s"\n' "$password" >"$dir/userlist.txt")
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
httpay = host=127.0.0.1 port=$pg_port dbname=httpay
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = plain
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    if [[ "$(id -u)" == "0" ]]; then chown -R "$RUN_USER:" "$dir"; fi
    as_owner "$bin" -d "$dir/pgbouncer.ini" >&2 || { tail -n 20 "$dir/pgbouncer.log" >&2 || true; die "pgbouncer did not start"; }
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "postgresql://httpay:$password@127.0.0.1:$port/httpay"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$dir/pgbouncer.log" >&2 || true
    die "pgbouncer is not listening on 127.0.0.1:$port"
}

stop() {
    [[ $# -eq 1 ]] || die "usage: scripts/pgbouncer.sh stop DIR"
    local pid
    pid="$(cat "$1/pgbouncer.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: scripts/pgbouncer.sh start DIR PORT PG_PORT PASSWORD | stop DIR" ;;
esac
