""" "What would you decide for this user and device, and why?" for the admin port.

The question is turned into the EAS request a device would send (plain query form) and
run through the same parser and the same ``explain`` (``core.decision``) as live
traffic, so the answer is exactly what the data path would do now. The answer never
contains a password, a PW1 hash or a sealed PW2: for credential substitution it says
only whether it is configured for the user.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from onprem_gateway.core.credentials import substitution_enabled
from onprem_gateway.core.decision import explain
from onprem_gateway.core.eas_request import EasRequestError, parse
from onprem_gateway.core.policy_index import PolicyIndex

EAS_PATH = "/Microsoft-Server-ActiveSync"
QUESTION_FIELDS = ("user", "device_id", "device_type", "user_agent", "command", "protocol_version")


class DiagnosticsError(ValueError):
    """The question is malformed (a 400 with this reason)."""


def explain_device(
    query: Mapping[str, str],
    policy: PolicyIndex,
    clock: Callable[[], float] = time.time,
) -> dict[str, object]:
    unknown = sorted(set(query) - set(QUESTION_FIELDS))
    if unknown:
        raise DiagnosticsError(
            f"unknown parameter(s) {', '.join(unknown)}; use {', '.join(QUESTION_FIELDS)}"
        )
    user = query.get("user", "").strip()
    device_id = query.get("device_id", "").strip()
    if not user or not device_id:
        raise DiagnosticsError("user and device_id are required")
    command = query.get("command", "Sync").strip() or "Sync"
    params = {"Cmd": command, "User": user, "DeviceId": device_id}
    if query.get("device_type", "").strip():
        params["DeviceType"] = query["device_type"].strip()
    headers = {"ms-asprotocolversion": query.get("protocol_version", "16.1").strip() or "16.1"}
    if query.get("user_agent"):
        headers["user-agent"] = query["user_agent"]
    try:
        facts = parse("POST", f"{EAS_PATH}?{urlencode(params)}", headers)
    except EasRequestError as exc:
        raise DiagnosticsError(exc.reason) from None
    answer = explain(facts, policy, clock()).as_dict()
    credential = policy.credential(facts.user)
    answer["question"] = {
        "user": facts.user,
        "device_id": facts.device_id,
        "device_type": facts.device_type,
        "user_agent": facts.user_agent,
        "command": facts.command,
        "protocol_version": facts.protocol_version,
    }
    answer["credential_substitution"] = (
        "not configured"
        if credential is None
        else ("enabled" if substitution_enabled(credential) else "disabled")
    )
    return answer
