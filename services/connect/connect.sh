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
# The jar download (maven_fetch) and the cache dir come from services.sh.
# shellcheck source=../services.sh
source "$CONNECT_DIR/../services.sh"

CONNECT_VERSION=4.1.1
DEBEZIUM_VERSION=3.5.0.Final
CONNECT_LIBS=$CACHE_DIR/connect-$CONNECT_VERSION-debezium-jdbc-$DEBEZIUM_VERSION/libs

log() { echo "connect: $*" >&2; }
die() { echo "connect: error: $*" >&2; exit 1; }

fetch_libs() {
    command -v java >/dev/null || die "java (17 or newer) is needed to run Kafka Connect"
    maven_fetch "Kafka Connect $CONNECT_VERSION + Debezium JDBC sink $DEBEZIUM_VERSION" "$CONNECT_DIR/pom.xml" \
        connect.libs.dir "$CONNECT_LIBS" "debezium-connector-jdbc-$DEBEZIUM_VERSION.jar"
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
