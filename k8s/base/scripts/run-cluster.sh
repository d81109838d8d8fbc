#!/bin/sh
# Starts this pod's process of the Bytewax cluster.
#   process id = the Indexed Job's completion index (JOB_COMPLETION_INDEX)
#   addresses  = every pod's stable name behind the headless Service:
#                <job>-<index>.<service>:<port>, for index 0 .. MUTAGG_PROCESSES-1
# MUTAGG_PROCESSES must equal the Job's parallelism and completions; with autoscaling
# (MUTAGG_SCALE_TARGET set, k8s/overlays/prod-autoscale) the count is the Job's completions
# instead, read by `mutagg scale join` once the cluster this pod replaces has stopped.
# Extra arguments are passed to `mutagg run` (e.g. --until-idle for a catch-up run).
set -eu
index="${JOB_COMPLETION_INDEX:?JOB_COMPLETION_INDEX is not set (not an Indexed Job?)}"
processes="${MUTAGG_PROCESSES:-1}"
workers="${MUTAGG_WORKERS:-1}"
case " $* " in *" --until-idle "*) until_idle=1 ;; *) until_idle=0 ;; esac

if [ -n "${MUTAGG_SCALE_TARGET:-}" ]; then
    processes=$(mutagg scale join --pod "${POD_NAME:?POD_NAME is not set (the pod's metadata.name)}")
    if [ "$index" -ge "$processes" ]; then
        # A scale-down removes this index: the Job controller deletes the pod; 143 is retried, never counted.
        echo "run-cluster: completion index $index is beyond the Job's $processes process(es) after a rescale" >&2
        exit 143
    fi
fi

if [ "$processes" -le 1 ]; then
    set -- run --workers "$workers" "$@"
else
    job="${JOB_NAME:?JOB_NAME is not set}"
    service="${MUTAGG_CLUSTER_SERVICE:?MUTAGG_CLUSTER_SERVICE is not set}"
    port="${MUTAGG_CLUSTER_PORT:-9500}"
    if [ "$index" -ge "$processes" ]; then
        echo "run-cluster: completion index $index but MUTAGG_PROCESSES=$processes: set both to the Job's parallelism" >&2
        exit 2
    fi
    addresses=""
    i=0
    while [ "$i" -lt "$processes" ]; do
        addresses="${addresses:+$addresses,}$job-$i.$service:$port"
        i=$((i + 1))
    done
    # Timely binds to this process's own entry: wait (bounded) until the headless
    # Service publishes this pod's name (it publishes not-ready pods too).
    self="$job-$index.$service"
    waited=0
    until getent hosts "$self" >/dev/null 2>&1; do
        if [ "$waited" -ge "${MUTAGG_DNS_WAIT_S:-120}" ]; then
            echo "run-cluster: $self does not resolve after ${waited}s; is the Job's subdomain the Service name?" >&2
            exit 3
        fi
        sleep 1
        waited=$((waited + 1))
    done
    set -- run --workers "$workers" --process-id "$index" --addresses "$addresses" "$@"
fi
echo "run-cluster: mutagg $*" >&2

# Not `exec`: an Indexed Job counts an index whose pod exited 0 as complete and never
# runs it again. A streaming run (no --until-idle) that stops, e.g. on the SIGTERM of
# a node drain, must therefore not exit 0, or the cluster stays a process short (or
# the Job completes). So: forward SIGTERM/SIGINT to the dataflow (it finishes the batch
# in flight), and report a streaming run's clean stop as 143, "terminated".
mutagg "$@" &
child=$!
stopping=0
trap 'stopping=1; kill -TERM "$child" 2>/dev/null || true' TERM INT
status=0
wait "$child" || status=$?
if [ "$stopping" = 1 ]; then
    status=0
    wait "$child" || status=$?
fi
if [ "$status" = 0 ] && [ "$until_idle" = 0 ]; then
    echo "run-cluster: the dataflow stopped; exit 143 so that the Job starts this process again" >&2
    exit 143
fi
exit "$status"
