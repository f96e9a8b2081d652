"""OpenAPI export of the control plane's HTTP API.

``python -m lambdas.api.openapi`` rewrites ``lambdas/api/openapi.json``;
``python -m lambdas.api.openapi --check`` exits non-zero when it is out of date (the
test suite runs the same comparison). The dashboard and the admin CLI build on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lambdas import resources
from lambdas.api.app import create_app
from lambdas.settings import parse_settings

OPENAPI_FILE = Path(__file__).with_name("openapi.json")


def render() -> str:
    """The document, from an app built on placeholder settings (the routes and models do
    not depend on the deployment)."""
    env = {t.env: f"table-{t.id}" for t in resources.TABLES}
    env.update({q.env: f"https://queue.invalid/{q.id}" for q in resources.QUEUES})
    env[resources.ENV_CONSOLE_AUTH] = "jwt"
    app = create_app(parse_settings(env))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def is_current() -> bool:
    return OPENAPI_FILE.exists() and OPENAPI_FILE.read_text() == render()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        if is_current():
            return 0
        print(
            f"{OPENAPI_FILE} is out of date: run python -m lambdas.api.openapi",
            file=sys.stderr,
        )
        return 1
    if args:
        print("usage: python -m lambdas.api.openapi [--check]", file=sys.stderr)
        return 2
    OPENAPI_FILE.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
