#!/usr/bin/env bash
# A streaming standby of a local PostgreSQL, for failover (issue 18): built with
# pg_basebackup, synchronous or asynchronous, on its own port, 127.0.0.1 only.
#
#   standby.sh start [sync|async]  primary running, standby built (once) and running, in that mode
#   standby.sh promote             the standby becomes a read-write primary (pg_ctl promote)
#   standby.sh stop-primary        stop the primary `immediate` (no shutdown checkpoint: a crash)
#   standby.sh detach              the standby stops receiving WAL (an async standby falling behind)
#   standby.sh stop                stop the standby (and a pair's own primary; never the shared one)
#   standby.sh reset               stop, then delete the standby (and a pair's own primary) data dirs
#   standby.sh status              exit 0 if primary and standby answer, else 3
#   standby.sh env                 `export MUTAGG_DATABASE_URL=` a multi-host URL naming both
#
# services.sh hands over `start --ha [sync|async]`, `start|stop|status postgres-standby [...]`,
# `promote` and `stop-primary` to this script.
#
# Settings (environment):
#   MUTAGG_HA_PRIMARY_PORT  the primary (default MUTAGG_PG_PORT, 15432: the shared server of
#                           services.sh, which this script starts with services.sh but never
#                           stops unless asked to with `stop-primary`). Another port makes a
#                           separate primary+standby pair with its own data dirs (tests use
#                           15441/15442, so a failover never touches the shared server).
#   MUTAGG_HA_STANDBY_PORT  the standby (default 15434; 15433 is services/secure.sh's)
#   MUTAGG_HA_STATE_DIR     data dirs and logs (default <MUTAGG_STATE_DIR>/ha-<primary>-<standby>)
#
# Modes. `sync` names the standby in the primary's synchronous_standby_names: a COMMIT returns
# once the standby has the WAL, for sessions with synchronous_commit on (a pair's own primary
# runs with it on; the shared one runs with it off, so only sessions that ask for it, as the URL
# of `env` does, wait). `async`: nobody waits; a promoted standby may lack the last commits.
set -euo pipefail

HA_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=services.sh
source "$HA_SCRIPT_DIR/services.sh"

SHARED_PG_PORT=$PG_PORT
HA_PRIMARY_PORT=${MUTAGG_HA_PRIMARY_PORT:-$PG_PORT}
HA_STANDBY_PORT=${MUTAGG_HA_STANDBY_PORT:-15434}
HA_DIR=${MUTAGG_HA_STATE_DIR:-$STATE_DIR/ha-$HA_PRIMARY_PORT-$HA_STANDBY_PORT}
HA_NAME=mutagg_standby_$HA_STANDBY_PORT   # its application_name, as synchronous_standby_names says it
SHARED_PG_DATA=$PG_DATA
# After services.sh's options (the last -c wins): smaller than the shared server, and waiting for
# a synchronous standby where one is named.
PAIR_OPTIONS="-c synchronous_commit=on -c shared_buffers=64MB -c max_connections=60"

log() { echo "standby: $*" >&2; }
die() { echo "standby: error: $*" >&2; exit 1; }

own_primary() { [[ $HA_PRIMARY_PORT != "$SHARED_PG_PORT" ]]; }

# Point services.sh's PostgreSQL globals at one of the two servers.
use_primary() {
    PG_PORT=$HA_PRIMARY_PORT
    if own_primary; then
        PG_DIR=$HA_DIR/primary
        PG_DATA=$PG_DIR/data
        PG_LOG=$PG_DIR/postgres.log
        # Synchronous replication needs sessions that wait for it (services.sh runs with it off).
        PG_EXTRA_OPTIONS=$PAIR_OPTIONS
    else
        PG_DIR=$STATE_DIR/postgres
        PG_DATA=$SHARED_PG_DATA
        PG_LOG=$PG_DIR/postgres.log
        PG_EXTRA_OPTIONS=""
    fi
}

use_standby() {
    PG_PORT=$HA_STANDBY_PORT
    PG_DIR=$HA_DIR/standby
    PG_DATA=$PG_DIR/data
    PG_LOG=$PG_DIR/postgres.log
    PG_EXTRA_OPTIONS=$PAIR_OPTIONS
}

psql_at() {
    local port=$1
    shift
    "$PG_BIN/psql" -h "$HOST" -p "$port" -U postgres -d postgres -X -q -tA -v ON_ERROR_STOP=1 "$@"
}

ha_lock() {
    mkdir -p "$STATE_DIR"
    # Its own lock file: services.sh may hold $STATE_DIR/.lock while it hands over to this script.
    exec 9>"$STATE_DIR/.lock-ha-$HA_PRIMARY_PORT-$HA_STANDBY_PORT"
    flock -w 300 9 || die "another start/stop holds the lock of this standby"
}

start_primary() {
    if own_primary; then
        use_primary
        pg_start
    else
        bash "$SERVICES_DIR/services.sh" start postgres
        use_primary
        pg_find_bindir || die "no PostgreSQL binaries"
    fi
}

# The mode lives on the primary: which standby its COMMITs wait for (reloaded, no restart).
set_mode() {
    local mode=$1 names=""
    [[ $mode == sync ]] && names="\"$HA_NAME\""
    psql_at "$HA_PRIMARY_PORT" -c "ALTER SYSTEM SET synchronous_standby_names = '$names'" \
        -c "ALTER SYSTEM SET wal_keep_size = '512MB'" -c "SELECT pg_reload_conf()" >/dev/null
    log "mode $mode (primary $HOST:$HA_PRIMARY_PORT, standby $HOST:$HA_STANDBY_PORT)"
}

# A standby whose data dir has no standby.signal was promoted: it left the primary's timeline.
standby_promoted() { [[ -f $HA_DIR/standby/data/PG_VERSION && ! -f $HA_DIR/standby/data/standby.signal ]]; }

basebackup() {
    use_standby
    [[ -f $PG_DATA/PG_VERSION ]] && return 0
    pg_prepare_dirs
    local tmp=$PG_DATA.tmp
    rm -rf "$tmp"
    log "pg_basebackup from $HOST:$HA_PRIMARY_PORT into $PG_DATA"
    # -R writes primary_conninfo and standby.signal; -X stream copies the WAL of the backup too.
    as_pg "$PG_BIN/pg_basebackup" -h "$HOST" -p "$HA_PRIMARY_PORT" -U postgres -D "$tmp" -R -X stream \
        -c fast -d "application_name=$HA_NAME" >"$PG_DIR/basebackup.log" 2>&1 || {
        show_tail "$PG_DIR/basebackup.log"
        die "pg_basebackup failed"
    }
    rm -f "$tmp/postmaster.pid" "$tmp/postmaster.opts"
    mv -T "$tmp" "$PG_DATA"
}

ha_start() {
    local mode=${1:-sync}
    [[ $mode == sync || $mode == async ]] || die "mode must be sync or async, not '$mode'"
    pg_ensure_binaries
    # Before the primary starts: an old primary next to a promoted standby would be two of them.
    standby_promoted && die "the standby on $HOST:$HA_STANDBY_PORT was promoted; \`standby.sh reset\` rebuilds it"
    start_primary
    ha_lock
    basebackup
    use_standby
    touch "$PG_LOG"
    chown postgres:postgres "$PG_LOG" 2>/dev/null || true
    pg_start
    set_mode "$mode"
}

ha_promote() {
    pg_find_bindir || die "no PostgreSQL binaries"
    use_standby
    pg_pid >/dev/null || die "the standby on $HOST:$HA_STANDBY_PORT is not running"
    if [[ ! -f $PG_DATA/standby.signal ]]; then
        log "already promoted ($HOST:$HA_STANDBY_PORT)"
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" promote -w -t 60 -D "$PG_DATA" >/dev/null || die "pg_ctl promote failed (see $PG_LOG)"
    log "promoted: $HOST:$HA_STANDBY_PORT is read-write"
}

ha_stop_primary() {
    pg_find_bindir || die "no PostgreSQL binaries"
    use_primary
    if ! pg_pid >/dev/null; then
        log "primary $HOST:$HA_PRIMARY_PORT is not running"
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" stop -m immediate -w -t 60 -D "$PG_DATA" >/dev/null ||
        die "pg_ctl stop -m immediate failed (see $PG_LOG)"
    log "primary $HOST:$HA_PRIMARY_PORT stopped (immediate)"
}

ha_detach() {
    pg_find_bindir || die "no PostgreSQL binaries"
    psql_at "$HA_STANDBY_PORT" -c "ALTER SYSTEM SET primary_conninfo = ''" -c "SELECT pg_reload_conf()" >/dev/null
    # The reload is asynchronous: the WAL receiver streams on until the startup process acts on it
    # (on a busy machine, long enough for a test's "behind" to be no gap at all). Return once it is gone.
    local tries=0
    until [ "$(psql_at "$HA_STANDBY_PORT" -c "SELECT count(*) FROM pg_stat_wal_receiver")" = 0 ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || die "standby $HOST:$HA_STANDBY_PORT still receives WAL 30 s after detach"
        sleep 0.1
    done
    log "standby $HOST:$HA_STANDBY_PORT no longer receives WAL"
}

ha_stop() {
    pg_find_bindir || return 0
    use_standby
    pg_stop
    if own_primary; then
        use_primary
        pg_stop
    elif pg_ready 2>/dev/null; then
        # The shared primary must not wait for a standby that is gone.
        PG_PORT=$HA_PRIMARY_PORT
        psql_at "$HA_PRIMARY_PORT" -c "ALTER SYSTEM RESET synchronous_standby_names" \
            -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
    fi
}

ha_reset() {
    ha_stop
    rm -rf "$HA_DIR/standby"
    if own_primary; then rm -rf "$HA_DIR/primary"; fi
    log "deleted the data of $HA_DIR"
}

ha_status() {
    local rc=0
    pg_find_bindir || true
    use_primary
    echo -n "primary " && pg_status || rc=3
    use_standby
    echo -n "standby " && pg_status || rc=3
    if ((rc == 0)); then
        echo "standby in recovery: $(psql_at "$HA_STANDBY_PORT" -c 'SELECT pg_is_in_recovery()' 2>/dev/null || echo '?')"
    fi
    return "$rc"
}

ha_env() {
    local url="postgresql://postgres@$HOST:$HA_PRIMARY_PORT,$HOST:$HA_STANDBY_PORT/$PG_DATABASE"
    url+="?target_session_attrs=read-write&connect_timeout=5"
    own_primary || url+="&options=-c%20synchronous_commit%3Don"
    echo "export MUTAGG_DATABASE_URL='$url'"
}

ha_main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    start) ha_start "$@" ;;
    promote) ha_promote ;;
    stop-primary) ha_stop_primary ;;
    detach) ha_detach ;;
    stop) ha_lock && ha_stop ;;
    reset) ha_lock && ha_reset ;;
    status) ha_status ;;
    env) ha_env ;;
    *)
        echo "usage: $0 start [sync|async] | promote | stop-primary | detach | stop | reset | status | env" >&2
        exit 2
        ;;
    esac
}

ha_main "$@"
