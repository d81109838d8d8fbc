#!/bin/sh
# Creates the Bytewax recovery partitions once, on the persistent volume.
# Idempotent: an existing set (part-*.sqlite3) is never touched, so a restarted or
# rescheduled pod resumes from it. "Exists" means partition files, not a non-empty
# directory: a fresh ext4 volume already holds lost+found.
# Process 0 creates them in a staging directory and moves them in; the other
# processes wait (bounded) until the set is in place.
set -eu
dir="${MUTAGG_RECOVERY_DIR:?MUTAGG_RECOVERY_DIR is not set}"
partitions="${MUTAGG_RECOVERY_PARTITIONS:?MUTAGG_RECOVERY_PARTITIONS is not set}"
index="${JOB_COMPLETION_INDEX:-0}"
wait_s="${MUTAGG_RECOVERY_WAIT_S:-300}"
staging="$dir/.staging"

count() { find "$dir" -maxdepth 1 -name 'part-*.sqlite3' | wc -l; }

mkdir -p "$dir"
if [ "$index" != "0" ]; then
    waited=0
    until [ "$(count)" -gt 0 ] && [ ! -d "$staging" ]; do
        if [ "$waited" -ge "$wait_s" ]; then
            echo "recovery-init: no recovery partitions in $dir after ${wait_s}s (process 0 creates them)" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "recovery-init: $(count) partitions ready in $dir"
    exit 0
fi

existing=$(count)
if [ "$existing" -gt 0 ]; then
    rm -rf "$staging"   # left by a process 0 killed after moving the set in
    echo "recovery-init: $existing partitions in $dir; keeping them"
    if [ "$existing" -ne "$partitions" ]; then
        echo "recovery-init: note: MUTAGG_RECOVERY_PARTITIONS=$partitions, but the existing set ($existing) is used" >&2
    fi
    exit 0
fi
rm -rf "$staging"
mutagg --recovery-dir "$staging" recovery init --partitions "$partitions"
mv "$staging"/part-*.sqlite3 "$dir"/
rm -rf "$staging"
echo "recovery-init: created $partitions partitions in $dir"
