"""Container health check: GET a path of the service named by ``SERVICE`` on its port.

Standard library only, so it costs a fraction of importing the app. Exit 0 when the
answer is 2xx, 1 otherwise (Docker's HEALTHCHECK contract).
Usage: ``python deploy/healthcheck.py [/healthz|/readyz]``.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = {"ingest": 8001, "health": 8002, "playbooks": 8003, "notify": 8004, "console": 8005}


def target(path: str) -> str:
    service = os.environ.get("SERVICE", "")
    if service not in DEFAULT_PORTS:
        raise SystemExit(f"healthcheck: SERVICE must be one of {', '.join(DEFAULT_PORTS)}")
    port = os.environ.get(f"{service.upper()}_PORT") or str(DEFAULT_PORTS[service])
    return f"http://127.0.0.1:{port}{path}"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    url = target(path)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed http URL
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
