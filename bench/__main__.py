"""``make bench``: run every benchmark module present, one after the other."""

from __future__ import annotations

import importlib
import importlib.util
import sys

MODULES = [
    "bench.ingest",
    "bench.health",
    "bench.score_quality",
    "bench.playbooks",
    "bench.notify",
    "bench.console",
    "bench.e2e",
    "bench.soak",
]


def main() -> int:
    failed = []
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        print(f"\n=== {name} ===", flush=True)
        try:
            importlib.import_module(name).main()
        except Exception as exc:
            print(f"{name} failed: {exc!r}", flush=True)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
