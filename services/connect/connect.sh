#!/usr/bin/env bash
# Kafka Connect (standalone) and the Debezium JDBC sink connector for the peer
# row of `mutagg bench --peer`.
#
#   connect.sh libs    fetch the jars once (Maven Central, services/connect/pom.xml)
#                      and print the folder to put on the classpath: java -cp "<dir>/*"
#
# Settings (environment):
#   MUTAGG_CACHE_DIR   downloaded jars (default ~/.cache/mutation-aggregator), as services.sh
set -euo pipefail

CONNECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONNECT_VERSION=4.1.1
DEBEZIUM_VERSION=3.5.0.Final
CACHE_DIR=${MUTAGG_CACHE_DIR:-$HOME/.cache/mutation-aggregator}
CONNECT_LIBS=$CACHE_DIR/connect-$CONNECT_VERSION-debezium-jdbc-$DEBEZIUM_VERSION/libs

log() { echo "connect: $*" >&2; }
die() { echo "connect: error: $*" >&2; exit 1; }

# Fill the jar cache once: mvn copies into a temp dir that is renamed when
# complete, so an interrupted download is never taken for a complete one.
fetch_libs() {
    [[ -f $CONNECT_LIBS/connect-runtime-$CONNECT_VERSION.jar &&
       -f $CONNECT_LIBS/debezium-connector-jdbc-$DEBEZIUM_VERSION.jar ]] && return 0
    command -v mvn >/dev/null || die "mvn is needed to fetch the Kafka Connect jars (apt-get install maven)"
    command -v java >/dev/null || die "java (17 or newer) is needed to run Kafka Connect"
    local tmp=$CONNECT_LIBS.tmp.$$
    mkdir -p "$(dirname "$CONNECT_LIBS")"
    rm -rf "$tmp"
    trap 'rm -rf "$CONNECT_LIBS.tmp.$$"' EXIT   # also when interrupted
    log "downloading Kafka Connect $CONNECT_VERSION + Debezium JDBC sink $DEBEZIUM_VERSION (once) into $CONNECT_LIBS"
    local mvn_log=$CONNECT_LIBS.mvn.log
    if ! mvn -q -B -f "$CONNECT_DIR/pom.xml" -Dconnect.libs.dir="$tmp" \
            dependency:copy-dependencies >"$mvn_log" 2>&1; then
        cat "$mvn_log" >&2
        die "mvn could not fetch the Kafka Connect jars (output above, also in $mvn_log)"
    fi
    [[ -f $tmp/debezium-connector-jdbc-$DEBEZIUM_VERSION.jar ]] || die "mvn left no debezium-connector-jdbc jar in $tmp"
    # Another fetch may have won the race: then keep its copy.
    mv -T "$tmp" "$CONNECT_LIBS" 2>/dev/null || rm -rf "$tmp"
}

case ${1:-} in
libs)
    fetch_libs
    echo "$CONNECT_LIBS"
    ;;
*)
    echo "usage: $0 libs" >&2
    exit 2
    ;;
esac
