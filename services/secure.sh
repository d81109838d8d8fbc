#!/usr/bin/env bash
# Secure local services, for the tests of secure connections and least privilege:
# a SECOND Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512),
# and a SECOND PostgreSQL server that accepts only TLS connections with
# scram-sha-256 passwords. Both listen on 127.0.0.1 only, with their own ports
# and state; the plain services of services.sh are left alone.
#
#   secure.sh start  [kafka|postgres]   start (idempotent; no-op if running)
#   secure.sh stop   [kafka|postgres]   stop (idempotent)
#   secure.sh status [kafka|postgres]   exit 0 if all asked-for run, else 3
#   secure.sh env    [job|owner|edge]   `export` lines for the job's role (default),
#                                       the owner's (who runs `mutagg migrate` and creates
#                                       topics) or the edge node's (Kafka only)
#
# Settings (environment):
#   MUTAGG_SECURE_KAFKA_PORT             SASL_SSL listener         (default 19192)
#   MUTAGG_SECURE_KAFKA_CONTROLLER_PORT  KRaft controller, mTLS    (default 19193)
#   MUTAGG_SECURE_PG_PORT                PostgreSQL, TLS only      (default 15433)
#   MUTAGG_SECURE_STATE_DIR  state (default <MUTAGG_STATE_DIR of services.sh>/secure)
#
# Made once by `start` in the state dir, never in the repo:
#   pki/ca.pem, ca.key           a test CA (openssl)
#   pki/server.pem, server.key   certificate for 127.0.0.1 and localhost (SAN), signed by the CA
#   secrets/*.password           generated passwords (0600): Kafka SCRAM users `admin`
#                                (inter-broker, super user), `mutagg-job` (the job) and
#                                `edge-van-1` (edge node van-1); PostgreSQL roles `postgres`
#                                (superuser), `mutagg_owner` (owns schema mutagg), `mutagg_job`
#   secrets/pgpass               libpq password file for those roles (0600)
# Delete the state dir (after `stop`) to start over with a new CA and new passwords.
#
# The broker authorizes every request (StandardAuthorizer, deny unless an ACL allows):
# `start` applies the ACLs of `mutagg topics acls` for the default topic names (README
# "Kafka ACLs"); tests with their own topics apply the same plan for those.
set -euo pipefail

SECURE_SERVICES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Helpers (logging, jar download, Kafka/PostgreSQL start/stop/wait) come from
# services.sh; its globals are re-pointed below at this script's own state.
# shellcheck source=services.sh
source "$SECURE_SERVICES_DIR/services.sh"

KAFKA_PORT=${MUTAGG_SECURE_KAFKA_PORT:-19192}
KAFKA_CONTROLLER_PORT=${MUTAGG_SECURE_KAFKA_CONTROLLER_PORT:-19193}
PG_PORT=${MUTAGG_SECURE_PG_PORT:-15433}
STATE_DIR=${MUTAGG_SECURE_STATE_DIR:-$STATE_DIR/secure}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx384m -Xms128m}

PKI_DIR=$STATE_DIR/pki
SECRETS_DIR=$STATE_DIR/secrets
CA_PEM=$PKI_DIR/ca.pem
PGPASS=$SECRETS_DIR/pgpass
KAFKA_ADMIN=admin                        # inter-broker and super user: creates topics and ACLs
KAFKA_JOB=mutagg-job
EDGE_NODE=van-1
KAFKA_EDGE=edge-$EDGE_NODE
PG_OWNER=mutagg_owner
PG_JOB=mutagg_job

KAFKA_DIR=$STATE_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOGS=$KAFKA_DIR/logs
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_LOG4J=$KAFKA_DIR/log4j2.properties
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_OUT=$KAFKA_LOGS/kafka.out
KAFKA_LOG=$KAFKA_LOGS/server.log
KAFKA_KEYSTORE=$KAFKA_DIR/keystore.pem   # private key + certificate chain, PEM

PG_DIR=$STATE_DIR/postgres
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
PG_SOCK=$STATE_DIR/pgsock
PG_TLS=$PG_DIR/tls                       # the server's copy of its key, owned by postgres

log() { echo "secure services: $*" >&2; }
die() { echo "secure services: error: $*" >&2; exit 1; }
secret() { echo "$SECRETS_DIR/$1.password"; }

# -------------------------------------------------------------- secrets ---

# Passwords are random hex (no quoting issues in JAAS, SQL or pgpass).
secrets_ensure() {
    mkdir -p "$SECRETS_DIR"
    chmod 700 "$SECRETS_DIR"
    local name file
    for name in kafka-$KAFKA_ADMIN kafka-$KAFKA_JOB kafka-$KAFKA_EDGE pg-postgres pg-$PG_OWNER pg-$PG_JOB; do
        file=$(secret "$name")
        [[ -s $file ]] && continue
        (umask 077 && openssl rand -hex 24 >"$file.tmp") && mv "$file.tmp" "$file"
    done
    (
        umask 077
        local role
        for role in postgres $PG_OWNER $PG_JOB; do
            echo "$HOST:$PG_PORT:*:$role:$(<"$(secret "pg-$role")")"
        done >"$PGPASS.tmp"
    )
    mv "$PGPASS.tmp" "$PGPASS"
}

# ------------------------------------------------------------------ PKI ---

# A CA and one server certificate (serverAuth for clients, clientAuth for the
# broker's own mTLS connection to its controller listener), 127.0.0.1 + localhost.
pki_ensure() {
    [[ -s $CA_PEM && -s $PKI_DIR/server.pem && -s $PKI_DIR/server.key ]] && return 0
    command -v openssl >/dev/null || apt_install openssl
    local tmp=$PKI_DIR.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "pki: creating a test CA and a server certificate in $PKI_DIR"
    (
        cd "$tmp"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.pem \
            -subj "/CN=mutation-aggregator test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        cat >server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
            -extfile server.ext -out server.pem 2>/dev/null
        openssl verify -CAfile ca.pem server.pem >/dev/null
        rm -f server.csr server.ext ca.srl
        chmod 644 ca.pem server.pem
    ) || die "pki: openssl failed to make the certificates"
    rm -rf "$PKI_DIR"
    mv -T "$tmp" "$PKI_DIR"
    chmod 755 "$PKI_DIR"
}

# ---------------------------------------------------------------- Kafka ---

# The broker's listeners and TLS are ours; the rest of its properties and the log4j2
# file are services.sh's.
kafka_write_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_LOGS"
    kafka_write_log4j
    (umask 077 && cat "$PKI_DIR/server.key" "$PKI_DIR/server.pem" "$CA_PEM" >"$KAFKA_KEYSTORE")
    (
        umask 077
        cat >"$KAFKA_PROPS.tmp" <<EOF
# Generated by services/secure.sh on each start; edits are lost. Holds a secret (0600).
listeners=SASL_SSL://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$KAFKA_PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN" password="$(<"$(secret "kafka-$KAFKA_ADMIN")")";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$CA_PEM
ssl.endpoint.identification.algorithm=https
ssl.enabled.protocols=TLSv1.3,TLSv1.2
# Nothing is allowed unless an ACL allows it. Super users: the SCRAM admin (inter-broker) and
# the broker's certificate on the controller listener (mTLS principal).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$KAFKA_ADMIN;User:CN=localhost
$(kafka_node_properties)
EOF
    )
    mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"   # mode 0600: it holds the admin password
}

# The admin's SCRAM credentials must exist before the broker first starts: they are
# written into the metadata log when the storage is formatted. (StorageTool takes them as
# arguments only, so they show in `ps` for the second the format runs.) The clients'
# users are added by kafka_users_and_acls, as the admin, on every start.
kafka_format_storage() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local tmp=$KAFKA_DATA.tmp cluster_id
    [[ -e $KAFKA_DATA ]] && die "kafka: $KAFKA_DATA exists but has no meta.properties; delete it to re-format"
    rm -rf "$tmp"
    cluster_id=$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)
    log "kafka: formatting storage with SCRAM user $KAFKA_ADMIN (cluster id $cluster_id)"
    (umask 077 && sed "s|^log.dirs=.*|log.dirs=$tmp|" "$KAFKA_PROPS" >"$KAFKA_DIR/format.properties")
    java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool \
        format -t "$cluster_id" -c "$KAFKA_DIR/format.properties" \
        --add-scram "SCRAM-SHA-512=[name=$KAFKA_ADMIN,password=$(<"$(secret "kafka-$KAFKA_ADMIN")")]" \
        >&2 || die "kafka: formatting the storage failed"
    rm -f "$KAFKA_DIR/format.properties"
    mv -T "$tmp" "$KAFKA_DATA"
}

# True if the broker answers a metadata request over SASL_SSL as the admin
# (or, without the venv's confluent_kafka, at least accepts TCP connections).
kafka_answers() {
    if [[ -z $KAFKA_PROBE ]]; then
        KAFKA_PROBE=tcp
        [[ -x $VENV_PY ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null && KAFKA_PROBE=python
    fi
    port_open "$KAFKA_PORT" || return 1
    if [[ $KAFKA_PROBE == python ]]; then
        timeout 15 "$VENV_PY" -c '
import sys
from pathlib import Path
from confluent_kafka.admin import AdminClient
bootstrap, user, password_file, ca = sys.argv[1:]
admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "security.protocol": "SASL_SSL",
                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                     "sasl.password": Path(password_file).read_text().strip(), "ssl.ca.location": ca})
sys.exit(0 if admin.list_topics(timeout=5).brokers else 1)
' "$HOST:$KAFKA_PORT" "$KAFKA_ADMIN" "$(secret "kafka-$KAFKA_ADMIN")" "$CA_PEM" >/dev/null 2>&1
    fi
}

# The clients' SCRAM users (added as the admin if missing, their passwords set again only
# if they no longer authenticate; the broker takes a moment to know a new one, so wait until
# each one authenticates), then the ACLs of `mutagg topics acls` for the default topic
# names. Both are idempotent; they need the project's venv.
kafka_users_and_acls() {
    [[ -x $VENV_PY ]] || die "kafka: $VENV_PY is missing: the secure broker's users and ACLs need the project's venv"
    log "kafka: SCRAM users $KAFKA_JOB and $KAFKA_EDGE, and their ACLs"
    timeout 120 "$VENV_PY" -c '
import sys, time
from pathlib import Path
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
bootstrap, ca, admin, admin_file, *users = sys.argv[1:]
def client(user, password_file):
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "security.protocol": "SASL_SSL",
                        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                        "sasl.password": Path(password_file).read_text().strip(), "ssl.ca.location": ca})
pairs = dict(zip(users[::2], users[1::2]))
admin_client = client(admin, admin_file)  # referenced until its futures are done
def upsert(names):
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    changes = [UserScramCredentialUpsertion(n, info, Path(pairs[n]).read_text().strip().encode()) for n in names]
    for future in admin_client.alter_user_scram_credentials(changes).values():
        future.result(timeout=60)
def authenticates(user):
    try:
        return bool(client(user, pairs[user]).list_topics(timeout=3).brokers)
    except KafkaException:
        return False
known = set()
for user, future in admin_client.describe_user_scram_credentials(list(pairs)).items():
    try:
        future.result(timeout=60)
        known.add(user)
    except KafkaException:  # RESOURCE_NOT_FOUND: a new user
        pass
if set(pairs) - known:
    upsert(sorted(set(pairs) - known))
for user in pairs:  # a known user whose password file was made anew gets it set once
    give_up_at, reset = time.monotonic() + 60, user not in known
    while not authenticates(user):
        if not reset:
            upsert([user])
            reset = True
        elif time.monotonic() > give_up_at:
            sys.exit(f"SCRAM user {user} cannot authenticate after 60 s")
        time.sleep(0.2)
' "$HOST:$KAFKA_PORT" "$CA_PEM" "$KAFKA_ADMIN" "$(secret "kafka-$KAFKA_ADMIN")" \
        "$KAFKA_JOB" "$(secret "kafka-$KAFKA_JOB")" "$KAFKA_EDGE" "$(secret "kafka-$KAFKA_EDGE")" >&2 ||
        die "kafka: adding the SCRAM users failed"
    (
        # shellcheck disable=SC2046  # names of variables, no spaces
        unset $(compgen -v MUTAGG_)   # the default topic names, whatever the caller has set
        eval "$(print_secure_env owner)"
        export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's mutagg
        timeout 120 "$VENV_PY" -m mutagg.cli --log-level WARNING topics acls --apply \
            --job-principal "User:$KAFKA_JOB" --edge "$EDGE_NODE=User:$KAFKA_EDGE" >&2
    ) || die "kafka: applying the ACLs failed"
}

secure_kafka_start() {
    secrets_ensure
    pki_ensure
    kafka_start
    kafka_users_and_acls
}

# ----------------------------------------------------------- PostgreSQL ---

# initdb with a superuser password; TLS on; pg_hba allows only hostssl with
# scram-sha-256 (no plain `host` lines, no Unix-socket logins).
pg_initdb() {
    [[ -f $PG_DATA/PG_VERSION ]] && return 0
    local tmp=$PG_DATA.tmp locale=C pwfile=$PG_DIR/initdb.pw
    locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' && locale=C.UTF-8
    rm -rf "$tmp"
    log "postgres: initdb into $PG_DATA (TLS only, scram-sha-256)"
    (umask 077 && cp "$(secret pg-postgres)" "$pwfile")
    is_root && chown postgres:postgres "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$tmp" -U postgres --pwfile="$pwfile" --auth-host=scram-sha-256 \
        --auth-local=scram-sha-256 -E UTF8 --locale="$locale" >"$PG_DIR/initdb.log" 2>&1 || {
        rm -f "$pwfile"
        show_tail "$PG_DIR/initdb.log"
        die "postgres: initdb failed"
    }
    rm -f "$pwfile"
    cat >"$tmp/pg_hba.conf" <<EOF
# Generated by services/secure.sh: TLS with a password (SCRAM) or nothing.
# TYPE   DATABASE  USER  ADDRESS       METHOD
hostssl  all       all   $HOST/32  scram-sha-256
EOF
    cat >>"$tmp/postgresql.conf" <<EOF

# services/secure.sh
ssl = on
ssl_cert_file = '$PG_TLS/server.pem'
ssl_key_file = '$PG_TLS/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
EOF
    is_root && chown postgres:postgres "$tmp/pg_hba.conf" "$tmp/postgresql.conf"
    mv -T "$tmp" "$PG_DATA"
}

# The server reads its key as the postgres user and refuses one others can read.
pg_install_tls() {
    mkdir -p "$PG_TLS"
    install -m 644 "$PKI_DIR/server.pem" "$PG_TLS/server.pem"
    install -m 600 "$PKI_DIR/server.key" "$PG_TLS/server.key"
    if is_root; then
        chown -R postgres:postgres "$PG_TLS"
    fi
    chmod 700 "$PG_TLS"
}

# Over TLS as the superuser (passwords from the pgpass file, never in argv).
pg_admin() {
    local database=$1
    shift
    PGPASSFILE=$PGPASS "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
        "host=$HOST port=$PG_PORT user=postgres dbname=$database sslmode=verify-full sslrootcert=$CA_PEM" "$@"
}

# Database `mutagg`, schema `mutagg` owned by mutagg_owner, and the job's login
# role with no privileges (`mutagg roles grant --role mutagg_job` gives them).
# Passwords are (re)set from the secret files on every start.
pg_create_database() {
    if [[ -z $(pg_admin postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'") ]]; then
        log "postgres: creating database $PG_DATABASE"
        pg_admin postgres -c "CREATE DATABASE $PG_DATABASE" >&2
    fi
    pg_admin "$PG_DATABASE" >&2 <<EOF
SET client_min_messages = warning;
SELECT 'CREATE ROLE $PG_OWNER LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_OWNER') \gexec
SELECT 'CREATE ROLE $PG_JOB LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_JOB') \gexec
ALTER ROLE $PG_OWNER LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD '$(<"$(secret "pg-$PG_OWNER")")';
ALTER ROLE $PG_JOB LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOINHERIT PASSWORD '$(<"$(secret "pg-$PG_JOB")")';
GRANT CONNECT, CREATE ON DATABASE $PG_DATABASE TO $PG_OWNER;
CREATE SCHEMA IF NOT EXISTS mutagg AUTHORIZATION $PG_OWNER;
ALTER ROLE $PG_OWNER IN DATABASE $PG_DATABASE SET search_path = mutagg;
ALTER ROLE $PG_JOB IN DATABASE $PG_DATABASE SET search_path = mutagg;
EOF
}

secure_pg_start() {
    secrets_ensure
    pki_ensure
    pg_ensure_binaries
    pg_prepare_dirs
    pg_install_tls
    pg_start
}

# ------------------------------------------------------------------ env ---

# Percent-encode a value for a URL query (paths may hold any character).
urlencode() {
    local value=$1 out="" c i
    for ((i = 0; i < ${#value}; i++)); do
        c=${value:i:1}
        case $c in
        [A-Za-z0-9/._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    echo "$out"
}

print_secure_env() {
    local role user
    case ${1:-job} in
    job) role=$PG_JOB user=$KAFKA_JOB ;;
    owner) role=$PG_OWNER user=$KAFKA_ADMIN ;;
    edge) role="" user=$KAFKA_EDGE ;;
    *) die "unknown role '$1' (expected job, owner or edge)" ;;
    esac
    printf 'export %s=%q\n' \
        MUTAGG_KAFKA_BOOTSTRAP "$HOST:$KAFKA_PORT" \
        MUTAGG_KAFKA_SECURITY_PROTOCOL SASL_SSL \
        MUTAGG_KAFKA_SASL_MECHANISM SCRAM-SHA-512 \
        MUTAGG_KAFKA_SASL_USERNAME "$user" \
        MUTAGG_KAFKA_SASL_PASSWORD_FILE "$(secret "kafka-$user")" \
        MUTAGG_KAFKA_SSL_CA_FILE "$CA_PEM"
    [[ -n $role ]] || return 0   # an edge node has no database
    local url="postgresql://$role@$HOST:$PG_PORT/$PG_DATABASE?sslmode=verify-full"
    url+="&sslrootcert=$(urlencode "$CA_PEM")&passfile=$(urlencode "$PGPASS")"
    printf 'export %s=%q\n' MUTAGG_DATABASE_URL "$url"
}

secure_usage() {
    echo "usage: $0 start|stop|status [kafka|postgres] | env [job|owner|edge]" >&2
    exit 2
}

secure_main() {
    local cmd=${1:-} which=${2:-all}
    if [[ $cmd == env ]]; then
        print_secure_env "${2:-job}"
        return 0
    fi
    dispatch secure_kafka_start secure_pg_start secure_usage "$cmd" "$which"
}

secure_main "$@"
