"""The project image's health check (Dockerfile HEALTHCHECK; standard library only, no curl in the image).

    python /app/docker/healthcheck.py [URL ...]

Healthy (exit 0) when every URL answers HTTP 2xx within the timeout. URLs default to $FRAUD_HEALTHCHECK_URL
(space-separated), which the compose file sets per service (the decision service's /healthz, the model server's
model status, Airflow's /health). A container with nothing to check (a one-off `fraudctl pipeline run`) is healthy.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = float(os.environ.get("FRAUD_HEALTHCHECK_TIMEOUT", "5"))


def check(url: str) -> str | None:
    """None when `url` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            if 200 <= response.status < 300:
                return None
            return f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


def main(argv: list[str]) -> int:
    urls = argv or os.environ.get("FRAUD_HEALTHCHECK_URL", "").split()
    problems = [p for p in (check(url) for url in urls) if p]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not problems:
        print("healthy" + (f": {' '.join(urls)}" if urls else " (nothing to check)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
