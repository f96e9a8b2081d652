"""A small client for the console API (``/console/v1``) and the gateway nodes' admin
ports. Every failure becomes a ``CliError`` with one line a human can act on."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ENV_API_URL = "SEG_API_URL"
ENV_TOKEN = "SEG_TOKEN"  # noqa: S105 - the variable's name
DEFAULT_STATE_DIR = Path(".seg")


class CliError(Exception):
    """One line for stderr; the command exits non-zero."""


@dataclass(frozen=True)
class Target:
    api_url: str
    token: str = field(repr=False)
    nodes: tuple[dict[str, Any], ...] = ()  # from a local stack's state file
    device_services_key: str = field(default="", repr=False)
    ca_cert: str = ""  # the local CA, when the local control plane serves HTTPS


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "state.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    return data


ROLES = ("viewer", "operator", "admin")


def resolve_target(
    api: str | None, token: str | None, state_dir: Path, role: str | None = None
) -> Target:
    """``--api`` / ``--token``, else ``SEG_API_URL`` / ``SEG_TOKEN``, else the state file
    ``seg up`` writes (its admin token, or with ``--role`` that role's token)."""
    state = read_state(state_dir) or {}
    api_url = api or os.environ.get(ENV_API_URL) or state.get("api_url", "")
    if role is not None and role not in ROLES:
        raise CliError(f"--role must be one of {', '.join(ROLES)}")
    local_token = state.get("tokens", {}).get(role, "") if role else state.get("admin_token", "")
    if role and not token and not local_token:
        raise CliError(f"no {role} token in {state_dir / 'state.json'}: pass --token")
    secret = token or (None if role else os.environ.get(ENV_TOKEN)) or local_token
    if not api_url:
        raise CliError(
            f"no control plane: pass --api URL, set {ENV_API_URL}, or start one with `seg up` "
            f"(no {state_dir / 'state.json'})"
        )
    if not secret:
        raise CliError(f"no admin token: pass --token or set {ENV_TOKEN}")
    if not api_url.startswith(("http://", "https://")):
        raise CliError(f"--api must be an http(s) URL, got {api_url!r}")
    local = state.get("api_url") == api_url
    return Target(
        api_url=api_url.rstrip("/"),
        token=secret,
        nodes=tuple(state.get("nodes", [])) if local else (),
        device_services_key=state.get("device_services_key", "") if local else "",
        ca_cert=state.get("ca_cert", "") if local else "",
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)[:300]
    return json.dumps(body)[:300]


class Console:
    def __init__(self, target: Target, timeout: float = 15.0) -> None:
        self.target = target
        verify: ssl.SSLContext | bool = True
        if target.ca_cert and target.api_url.startswith("https"):
            verify = ssl.create_default_context(cafile=target.ca_cert)
        self._http = httpx.Client(
            base_url=target.api_url,
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=timeout,
            verify=verify,
        )

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the control plane at {self.target.api_url} ({exc}); "
                "is `seg up` running?"
            ) from None
        if response.status_code >= 400:
            raise CliError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def download(self, path: str, **kwargs: Any) -> tuple[str, str | None]:
        """A text answer (CSV, JSON export) and the cursor of its next part."""
        try:
            response = self._http.request("GET", path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the control plane at {self.target.api_url} ({exc})"
            ) from None
        if response.status_code >= 400:
            raise CliError(f"GET {path}: HTTP {response.status_code}: {_detail(response)}")
        return response.text, response.headers.get("X-Next-Cursor")

    def node_decision(self, node: dict[str, Any], user: str, device_id: str) -> dict[str, Any]:
        url = f"{node['admin_url']}/diagnostics/decision"
        try:
            r = httpx.get(url, params={"user": user, "device_id": device_id}, timeout=5)
        except httpx.HTTPError as exc:
            return {"error": f"unreachable ({exc})"}
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {_detail(r)}"}
        data: dict[str, Any] = r.json()
        return data
