#!/usr/bin/env bash
# Run a command and start it again whenever it exits, for machines without systemd or docker compose.
#   scripts/supervise.sh .venv/bin/celery -A cxr_portal worker -Q inference --concurrency=2
# Stops (and stops the command) on SIGTERM/SIGINT. Waits 1 s after an exit, doubling up to 30 s while the
# command keeps dying within a minute of starting, so a broken configuration does not spin the CPU.
set -uo pipefail
child=0
trap 'if [ "$child" -ne 0 ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 0' TERM INT
delay=1
while true; do
    started=$(date +%s)
    "$@" &
    child=$!
    wait "$child"
    status=$?
    child=0
    if [ $(( $(date +%s) - started )) -ge 60 ]; then delay=1; fi
    echo "supervise: '$1' exited with status $status; starting it again in ${delay}s" >&2
    sleep "$delay"
    delay=$(( delay * 2 > 30 ? 30 : delay * 2 ))
done
