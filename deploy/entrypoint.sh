#!/bin/sh
# Picks what the container runs:
#   no arguments         -> the service named by $SERVICE   (python -m services.$SERVICE)
#   a service name       -> that service                    (docker run IMAGE ingest)
#   any other arguments  -> run them as given               (docker run IMAGE uptake migrate)
# `exec` keeps the service as PID 1, so SIGTERM reaches uvicorn and drains it.
set -eu

if [ "$#" -eq 0 ]; then
    set -- "${SERVICE:-}"
fi

case "$1" in
    ingest | health | playbooks | notify | console)
        export SERVICE="$1"
        exec python -m "services.$1"
        ;;
    "")
        echo "entrypoint: set SERVICE to ingest, health, playbooks, notify or console, or pass a command" >&2
        exit 64
        ;;
    *)
        exec "$@"
        ;;
esac
