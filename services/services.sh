#!/usr/bin/env bash
# Local services for tests and the demo: a real Apache Kafka broker (KRaft,
# single node acting as broker + controller) and a real PostgreSQL server.
# Everything listens on 127.0.0.1 only.
#
#   services.sh start  [kafka|postgres]   start (idempotent; no-op if running)
#   services.sh stop   [kafka|postgres]   stop (idempotent)
#   services.sh status [kafka|postgres]   exit 0 if all asked-for run, else 3
#   services.sh env                       print `export` lines for clients:
#                                         eval "$(bash services/services.sh env)"
#   services.sh start --ha [sync|async]   also a streaming standby (services/standby.sh);
#   services.sh start|stop|status postgres-standby [sync|async], promote, stop-primary: the same
#
# Settings (environment):
#   MUTAGG_KAFKA_PORT             broker port            (default 19092)
#   MUTAGG_KAFKA_CONTROLLER_PORT  KRaft controller port  (default 19093)
#   MUTAGG_PG_PORT                PostgreSQL port        (default 15432)
#   MUTAGG_CACHE_DIR   downloaded Kafka jars (default ~/.cache/mutation-aggregator)
#   MUTAGG_STATE_DIR   data dirs, logs, pid files (default <repo>/.local/services)
#   KAFKA_HEAP_OPTS    broker heap (default -Xmx1g -Xms256m)
#
# Kafka comes from Maven Central (services/kafka/pom.xml, fetched once with mvn);
# PostgreSQL from Debian's `postgresql` package (installed with apt if missing).
# Our PostgreSQL uses its own data dir and port; a Debian cluster is left alone.
set -euo pipefail

SERVICES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SERVICES_DIR")

KAFKA_VERSION=4.1.1
KAFKA_PORT=${MUTAGG_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${MUTAGG_KAFKA_CONTROLLER_PORT:-19093}
PG_PORT=${MUTAGG_PG_PORT:-15432}
PG_DATABASE=mutagg
HOST=127.0.0.1

CACHE_DIR=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}
STATE_DIR=${MUTAGG_STATE_DIR:-$REPO_DIR/.local/services}

KAFKA_LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
KAFKA_DIR=$STATE_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOGS=$KAFKA_DIR/logs
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_LOG4J=$KAFKA_DIR/log4j2.properties
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_OUT=$KAFKA_LOGS/kafka.out      # JVM stdout/stderr
KAFKA_LOG=$KAFKA_LOGS/server.log     # log4j2

PG_DIR=$STATE_DIR/postgres           # owned by the postgres user when root
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
PG_SOCK=$STATE_DIR/pgsock
PG_LIB_ROOT=/usr/lib/postgresql      # Debian: /usr/lib/postgresql/<major>/bin
PG_BIN=""                            # set by pg_find_bindir

VENV_PY=$REPO_DIR/.venv/bin/python

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

# A shell has one EXIT trap: every cleanup goes through this list, so that a later
# one (a download's temp dir) cannot silently replace an earlier one (the lock's release).
EXIT_ACTIONS=()
run_exit_actions() {
    local action
    for action in "${EXIT_ACTIONS[@]}"; do eval "$action" || true; done
}
on_exit() {
    EXIT_ACTIONS+=("$1")
    trap run_exit_actions EXIT
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Print the last lines of each given log file (those that exist).
show_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "----- last 50 lines of $f -----" >&2
        tail -n 50 "$f" >&2
    done
}

# apt-get install as root, or through sudo.
apt_install() {
    local -a sudo=()
    if ! is_root; then
        command -v sudo >/dev/null ||
            die "need to install '$*' with apt-get, but not root and no sudo: install it yourself"
        sudo=(sudo)
    fi
    log "installing $* with apt-get"
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

# ------------------------------------------------------------------ Kafka ---

# maven_fetch WHAT POM PROPERTY DEST JAR: fill the jar cache DEST once with the
# dependencies of POM (`mvn dependency:copy-dependencies`, output folder given as
# -DPROPERTY). mvn copies into a temp dir that is renamed when complete, so an
# interrupted download is never taken for a complete one; JAR proves it complete.
maven_fetch() {
    local what=$1 pom=$2 property=$3 dest=$4 jar=$5
    [[ -f $dest/$jar ]] && return 0
    command -v mvn >/dev/null || apt_install maven
    local tmp=$dest.tmp.$$
    mkdir -p "$(dirname "$dest")"
    rm -rf "$tmp"
    on_exit "rm -rf $(printf %q "$tmp")"   # also when interrupted
    log "downloading $what from Maven Central (once) into $dest"
    local mvn_log=$dest.mvn.log
    if ! mvn -q -B -f "$pom" -D"$property=$tmp" dependency:copy-dependencies >"$mvn_log" 2>&1; then
        cat "$mvn_log" >&2
        die "mvn could not fetch $what (output above, also in $mvn_log)"
    fi
    [[ -f $tmp/$jar ]] || die "mvn left no $jar in $tmp"
    # Another start may have won the race: then keep its copy.
    mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp"
}

kafka_fetch_libs() {
    maven_fetch "the Kafka $KAFKA_VERSION jars" "$SERVICES_DIR/kafka/pom.xml" kafka.libs.dir "$KAFKA_LIBS" \
        "kafka_2.13-$KAFKA_VERSION.jar"
}

# The broker's properties apart from its listeners (services/secure.sh writes other listeners).
kafka_node_properties() {
    cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Retention is enforced every second, not every 5 minutes: tests/integration/test_input_gap.py
# waits for a tiny-retention topic to lose its segments (no effect on topics with the default retention).
log.retention.check.interval.ms=1000
# No retention by age unless a topic sets one: test logs carry fixed Kafka timestamps (days or
# years back), which the 7-day default, checked every second, deleted as soon as they were produced.
log.retention.ms=-1
EOF
}

kafka_write_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_LOGS"
    {
        cat <<EOF
# Generated by services/services.sh on each start; edits are lost.
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
EOF
        kafka_node_properties
    } >"$KAFKA_PROPS"
    kafka_write_log4j
}

kafka_write_log4j() {
    cat >"$KAFKA_LOG4J" <<EOF
# Generated by services/services.sh: INFO to $KAFKA_LOG, nothing to the console.
status = warn
name = mutagg-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# Format the storage once (KRaft needs a cluster id in meta.properties).
# Static quorum (controller.quorum.voters), so no --standalone; formatting goes
# into a temp dir that is renamed when done.
kafka_format_storage() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local tmp=$KAFKA_DATA.tmp cluster_id
    [[ -e $KAFKA_DATA ]] && die "kafka: $KAFKA_DATA exists but has no meta.properties; delete it to re-format"
    rm -rf "$tmp"
    cluster_id=$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)
    log "kafka: formatting storage (cluster id $cluster_id)"
    sed "s|^log.dirs=.*|log.dirs=$tmp|" "$KAFKA_PROPS" >"$KAFKA_DIR/format.properties"
    java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool \
        format -t "$cluster_id" -c "$KAFKA_DIR/format.properties" >&2 ||
        die "kafka: formatting the storage failed"
    rm -f "$KAFKA_DIR/format.properties"
    mv -T "$tmp" "$KAFKA_DATA"
}

# Pid of our broker if it runs, else nothing (exit 1).
kafka_pid() {
    local pid
    [[ -f $KAFKA_PIDFILE ]] || return 1
    pid=$(<"$KAFKA_PIDFILE")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

# True if the broker answers a metadata request (or, without the venv's
# confluent_kafka, at least accepts TCP connections).
KAFKA_PROBE=""   # "python" or "tcp", decided on first use
kafka_answers() {
    if [[ -z $KAFKA_PROBE ]]; then
        KAFKA_PROBE=tcp
        [[ -x $VENV_PY ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null && KAFKA_PROBE=python
    fi
    port_open "$KAFKA_PORT" || return 1
    if [[ $KAFKA_PROBE == python ]]; then
        timeout 15 "$VENV_PY" -c '
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
sys.exit(0 if admin.list_topics(timeout=5).brokers else 1)
' "$HOST:$KAFKA_PORT" >/dev/null 2>&1
    fi
}

# Logs of the current start: JVM output, and server.log if written since.
kafka_show_logs() {
    show_tail "$KAFKA_OUT"
    [[ $KAFKA_LOG -nt $KAFKA_DIR/started ]] && show_tail "$KAFKA_LOG"
    return 0
}

kafka_wait() {
    local pid=$1 deadline=$((SECONDS + 90))
    log "kafka: waiting for the broker on $HOST:$KAFKA_PORT"
    until kafka_answers; do
        if [[ ! -e /proc/$pid ]]; then
            kafka_show_logs
            die "kafka: broker process $pid exited (logs above)"
        fi
        if ((SECONDS >= deadline)); then
            kafka_show_logs
            die "kafka: broker did not answer on $HOST:$KAFKA_PORT within 90 s (pid $pid, logs above)"
        fi
        sleep 1
    done
    log "kafka: ready on $HOST:$KAFKA_PORT (pid $pid)"
}

kafka_start() {
    local pid
    if pid=$(kafka_pid); then
        if kafka_answers; then
            log "kafka: already running (pid $pid)"
            return 0
        fi
        kafka_wait "$pid"
        return 0
    fi
    if [[ -f $KAFKA_PIDFILE ]]; then
        log "kafka: removing stale pid file"
        rm -f "$KAFKA_PIDFILE"
    fi
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        port_open "$port" && die "kafka: port $HOST:$port is taken by another process"
    done
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    kafka_fetch_libs
    kafka_write_config
    kafka_format_storage
    log "kafka: starting broker (log: $KAFKA_LOG)"
    : >"$KAFKA_OUT"                    # JVM output of this start only
    touch "$KAFKA_DIR/started"         # marks which server.log lines are new
    # setsid: own session, so the broker outlives this shell and its terminal; without fd 9,
    # so that it does not hold the start/stop lock (see dispatch) for as long as it runs.
    # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of options
    (
        cd "$KAFKA_DIR"
        exec 9>&-
        exec setsid nohup java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms256m} \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
            -Djava.awt.headless=true \
            -Dkafka.logs.dir="$KAFKA_LOGS" \
            -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
            >>"$KAFKA_OUT" 2>&1 </dev/null
    ) &
    pid=$!
    echo "$pid" >"$KAFKA_PIDFILE"
    kafka_wait "$pid"
}

kafka_stop() {
    local pid i
    if ! pid=$(kafka_pid); then
        rm -f "$KAFKA_PIDFILE"
        log "kafka: not running"
        return 0
    fi
    log "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        [[ -e /proc/$pid ]] || break
        sleep 1
    done
    if [[ -e /proc/$pid ]]; then
        log "kafka: still running after 30 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while [[ -e /proc/$pid ]]; do sleep 0.2; done
    fi
    rm -f "$KAFKA_PIDFILE"
    log "kafka: stopped"
}

kafka_status() {
    local pid
    if pid=$(kafka_pid) && kafka_answers; then
        echo "kafka: running (pid $pid, $HOST:$KAFKA_PORT)"
    elif [[ -n ${pid:-} ]]; then
        echo "kafka: process $pid alive but not answering on $HOST:$KAFKA_PORT"
        return 1
    else
        echo "kafka: stopped"
        return 1
    fi
}

# ------------------------------------------------------------- PostgreSQL ---

# Highest installed major version's bin dir, or the one matching an existing
# data dir's PG_VERSION.
pg_find_bindir() {
    local want="" d
    [[ -f $PG_DATA/PG_VERSION ]] && want=$(<"$PG_DATA/PG_VERSION")
    if [[ -n $want ]]; then
        d=$PG_LIB_ROOT/$want/bin
        [[ -x $d/initdb && -x $d/pg_ctl ]] ||
            die "postgres: $PG_DATA was made by PostgreSQL $want, whose binaries are missing: install postgresql-$want or delete $PG_DIR"
        PG_BIN=$d
        return 0
    fi
    for d in $(ls -d "$PG_LIB_ROOT"/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            PG_BIN=$d
            return 0
        fi
    done
    return 1
}

pg_ensure_binaries() {
    pg_find_bindir && return 0
    apt_install postgresql
    pg_find_bindir || die "postgres: no initdb/pg_ctl under $PG_LIB_ROOT/*/bin even after installing postgresql"
}

# Run a command as the postgres system user when we are root (initdb and
# postgres refuse to run as root), else as ourselves. From /, so the user
# need not be able to read the current directory.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_prepare_dirs() {
    mkdir -p "$STATE_DIR" "$PG_DIR" "$PG_SOCK"
    if is_root; then
        id -u postgres >/dev/null 2>&1 || {
            log "postgres: creating system user postgres"
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
        }
        chmod 755 "$STATE_DIR"
        chown postgres:postgres "$PG_DIR" "$PG_SOCK"
        as_pg test -x "$PG_DIR" ||
            die "postgres: user postgres cannot reach $PG_DIR (a parent dir is not world-traversable); set MUTAGG_STATE_DIR elsewhere"
    fi
    chmod 700 "$PG_DIR"
    chmod 755 "$PG_SOCK"
    # A Unix socket path is limited to 107 bytes.
    local sock=$PG_SOCK/.s.PGSQL.$PG_PORT
    ((${#sock} <= 107)) || die "postgres: socket path $sock is too long; set a shorter MUTAGG_STATE_DIR"
}

pg_initdb() {
    [[ -f $PG_DATA/PG_VERSION ]] && return 0
    local tmp=$PG_DATA.tmp locale=C
    locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' && locale=C.UTF-8
    rm -rf "$tmp"
    log "postgres: initdb into $PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$tmp" -U postgres --auth=trust -E UTF8 --locale="$locale" >"$PG_DIR/initdb.log" 2>&1 || {
        show_tail "$PG_DIR/initdb.log"
        die "postgres: initdb failed"
    }
    mv -T "$tmp" "$PG_DATA"
}

# Pid of our postmaster if it runs, else nothing (exit 1). A postmaster.pid
# whose pid is gone or is not a postgres process is stale.
pg_pid() {
    local pid
    [[ -r $PG_DATA/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$PG_DATA/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == postgres ]] || return 1
    echo "$pid"
}

pg_ready() {
    local isready=${PG_BIN:+$PG_BIN/}pg_isready
    "$isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -t 2
}

pg_wait() {
    local started=$SECONDS deadline=$((SECONDS + 60))
    log "postgres: waiting for the server on $HOST:$PG_PORT"
    until pg_ready; do
        if ((SECONDS >= started + 5)) && ! pg_pid >/dev/null; then
            show_tail "$PG_LOG"
            die "postgres: server is not running (logs above)"
        fi
        if ((SECONDS >= deadline)); then
            show_tail "$PG_LOG"
            die "postgres: server did not answer on $HOST:$PG_PORT within 60 s (logs above)"
        fi
        sleep 0.5
    done
    log "postgres: ready on $HOST:$PG_PORT"
}

pg_create_database() {
    local -a psql=("$PG_BIN/psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)
    if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'") ]]; then
        log "postgres: creating database $PG_DATABASE"
        "${psql[@]}" -c "CREATE DATABASE $PG_DATABASE" >&2
    fi
}

pg_start() {
    local pid
    pg_ensure_binaries
    pg_prepare_dirs
    if pid=$(pg_pid); then
        if pg_ready; then
            log "postgres: already running (pid $pid)"
        else
            pg_wait
        fi
        pg_create_database
        return 0
    fi
    if [[ -f $PG_DATA/postmaster.pid ]]; then
        log "postgres: removing stale postmaster.pid"
        rm -f "$PG_DATA/postmaster.pid"
    fi
    port_open "$PG_PORT" && die "postgres: port $HOST:$PG_PORT is taken by another process"
    pg_initdb
    if is_root; then
        touch "$PG_LOG" && chown postgres:postgres "$PG_LOG"
    fi
    log "postgres: starting server (log: $PG_LOG)"
    # Test/demo server: durability traded for speed (fsync off etc.).
    as_pg "$PG_BIN/pg_ctl" start -W -D "$PG_DATA" -l "$PG_LOG" -o "\
-c listen_addresses=$HOST -c port=$PG_PORT -c unix_socket_directories='$PG_SOCK' \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=200 -c shared_buffers=256MB ${PG_EXTRA_OPTIONS:-}" >/dev/null 9>&- ||
        die "postgres: pg_ctl start failed"
    pg_wait
    pg_create_database
}

pg_stop() {
    if ! pg_find_bindir || ! pg_pid >/dev/null; then
        [[ -f $PG_DATA/postmaster.pid ]] && rm -f "$PG_DATA/postmaster.pid"
        log "postgres: not running"
        return 0
    fi
    log "postgres: stopping"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null ||
        die "postgres: pg_ctl stop failed (see $PG_LOG)"
    log "postgres: stopped"
}

pg_status() {
    local pid
    pg_find_bindir || true
    if pid=$(pg_pid) && pg_ready; then
        echo "postgres: running (pid $pid, $HOST:$PG_PORT, database $PG_DATABASE)"
    elif [[ -n ${pid:-} ]]; then
        echo "postgres: process $pid alive but not answering on $HOST:$PG_PORT"
        return 1
    else
        echo "postgres: stopped"
        return 1
    fi
}

# ------------------------------------------------------------------- main ---

print_env() {
    echo "export MUTAGG_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT"
    echo "export MUTAGG_DATABASE_URL=postgresql://postgres@$HOST:$PG_PORT/$PG_DATABASE"
}

usage() {
    echo "usage: $0 start|stop|status [kafka|postgres] | env" >&2
    exit 2
}

# dispatch START_KAFKA START_POSTGRES USAGE CMD [WHICH]: start/stop/status of a pair of
# services (services/secure.sh reuses it with its own start functions and state dir).
dispatch() {
    local start_kafka=$1 start_pg=$2 usage_fn=$3 cmd=${4:-} which=${5:-all}
    [[ $which == all || $which == kafka || $which == postgres ]] ||
        die "unknown service '$which' (expected kafka or postgres)"
    if [[ $cmd == start || $cmd == stop ]]; then
        # One start/stop at a time: concurrent test runs would otherwise race on pid files.
        mkdir -p "$STATE_DIR"
        exec 9>"$STATE_DIR/.lock"
        flock -w 300 9 || die "another start/stop holds $STATE_DIR/.lock"
        # The daemons are started without fd 9 (see kafka_start, pg_start); should one
        # still hold it, unlocking the shared open file description on exit frees the lock.
        on_exit 'flock -u 9'
    fi
    case $cmd in
    start)
        [[ $which == postgres ]] || "$start_kafka"
        [[ $which == kafka ]] || "$start_pg"
        ;;
    stop)
        [[ $which == postgres ]] || kafka_stop
        [[ $which == kafka ]] || pg_stop
        ;;
    status)
        local rc=0
        if [[ $which != postgres ]]; then kafka_status || rc=3; fi
        if [[ $which != kafka ]]; then pg_status || rc=3; fi
        return "$rc"
        ;;
    *) "$usage_fn" ;;
    esac
}

main() {
    if [[ ${1:-} == env ]]; then
        print_env
        return 0
    fi
    # A standby (issue 18) is services/standby.sh's; `start --ha` first starts the rest (its
    # lock released when the subshell ends, as standby.sh starts the primary through this script).
    case "${1:-} ${2:-}" in
    "start --ha")
        (dispatch kafka_start pg_start usage start)
        exec bash "$SERVICES_DIR/standby.sh" start "${@:3}" ;;
    "start postgres-standby" | "stop postgres-standby" | "status postgres-standby")
        exec bash "$SERVICES_DIR/standby.sh" "$1" "${@:3}" ;;
    "promote "* | "stop-primary "*) exec bash "$SERVICES_DIR/standby.sh" "$1" ;;
    esac
    dispatch kafka_start pg_start usage "$@"
}

# Run only when executed; services/secure.sh sources this file for its helpers.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
