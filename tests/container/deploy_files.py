"""Reading the shipped deployment files (deploy/) the way their tools do: YAML documents,
compose interpolation, the Kubernetes ConfigMap's TOML."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
SITE_ENV_EXAMPLE = DEPLOY / "site.env.example"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
SYSTEMD_UNIT = DEPLOY / "systemd" / "seg-gateway.service"


def manifests() -> dict[str, list[dict[str, Any]]]:
    """file name -> its Kubernetes objects (kustomization.yaml is not one)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def kubernetes_object(kind: str, name: str = "") -> dict[str, Any]:
    found = [
        doc
        for docs in manifests().values()
        for doc in docs
        if doc["kind"] == kind and (not name or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def configmap_toml() -> dict[str, Any]:
    data = kubernetes_object("ConfigMap")["data"]["gateway.toml"]
    parsed: dict[str, Any] = tomllib.loads(data)
    return parsed


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} (the forms the
    shipped file uses); an unset required variable raises with its message."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name)
        if op.endswith("?") and not value:
            raise KeyError(f"{name}: {arg}")
        if value is None or (op == ":-" and value == ""):
            return arg if op.endswith("-") else ""
        return value

    return _VAR.sub(one, value)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_environment(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """A service's container environment after interpolation with ``env``."""
    raw = compose()["services"][service].get("environment", {})
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def haproxy_defaults() -> dict[str, str]:
    """The ``presetenv`` defaults of the shipped HAProxy configuration."""
    out = {}
    for line in HAPROXY_CFG.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "presetenv":
            out[parts[1]] = parts[2]
    return out


def systemd_unit() -> dict[str, list[str]]:
    """key -> values of the unit file (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out
