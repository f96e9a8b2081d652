"""JSON Schema export of the wire contract.

``python -m seg_contract.schema`` rewrites ``seg_contract/schemas/*.json``;
``python -m seg_contract.schema --check`` exits non-zero when they are out of date
(the test suite runs the same comparison). Other implementations of either side (a
gateway in another language, a console) build on these files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from seg_contract.key_ring import SigningKeySet
from seg_contract.models import (
    CONTRACT_VERSION,
    GATEWAY_MESSAGE,
    PUSH_MESSAGE,
    AccessEventBatch,
    PolicyDelta,
    PolicySnapshot,
)
from seg_contract.signed import SignedMessage

SCHEMA_DIR = Path(__file__).with_name("schemas")

DOCUMENTS: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    "policy-snapshot": PolicySnapshot,
    "policy-delta": PolicyDelta,
    "push-message": PUSH_MESSAGE,
    "gateway-message": GATEWAY_MESSAGE,
    "access-event-batch": AccessEventBatch,
    # Signed policy: the WebSocket envelope of a signed push, and the trusted key set.
    "signed-message": SignedMessage,
    "signing-key-set": SigningKeySet,
}


def render() -> dict[str, str]:
    """Return file name -> JSON text for every contract document."""
    out: dict[str, str] = {}
    for name, model in DOCUMENTS.items():
        if isinstance(model, TypeAdapter):
            schema = model.json_schema()
        else:
            schema = model.model_json_schema()
        schema["$id"] = f"urn:seg:contract:v{CONTRACT_VERSION}:{name}"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale_files() -> list[str]:
    """Names of the schema files that differ from what the models render."""
    return [
        name
        for name, text in render().items()
        if not (SCHEMA_DIR / name).exists() or (SCHEMA_DIR / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        stale = stale_files()
        if stale:
            print("out of date: " + ", ".join(stale) + " (run python -m seg_contract.schema)")
            return 1
        return 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (SCHEMA_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
