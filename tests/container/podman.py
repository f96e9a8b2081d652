"""podman, as the container tier drives it: the project's own set-up
(``scripts/podman-env.sh``), the image build (``scripts/build-image.sh``) and gateway
containers run the way docs/gateway.md tells admins to run them (read-only root, the
state volume, a tmpfs on /tmp, the image's own user).

``probe()`` says why podman cannot run here, if it cannot; the tier's modules skip with
that reason (and the session summary prints it), never silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001  # the Dockerfile's USER
STATE_DIR = "/var/lib/seg-gateway"
CONF_DIR = "/etc/seg-gateway"
# Keeps our containers under the caller's cgroup (podman-env.sh: cgroupfs, no systemd).
CGROUP_PARENT = "seg-container-tests"


class PodmanError(RuntimeError):
    pass


@dataclass
class Podman:
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120.0, capture: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args[:3])}... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        out = self.run(kind, "inspect", name).stdout
        data: list[dict[str, Any]] = json.loads(out)
        return data[0]

    def script(self, name: str, *args: str, timeout: float = 900.0) -> str:
        """Run one of the project's scripts with this environment; its last stdout line."""
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PodmanError(f"scripts/{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc.stdout.strip().splitlines()[-1]


def probe() -> Podman | str:
    """A usable podman, or the reason there is none."""
    if shutil.which("podman") is None:
        return (
            "podman is not installed: `make test` installs it as root "
            "(scripts/container-deps.sh); elsewhere: apt-get install podman buildah "
            "mmdebstrap uidmap fuse-overlayfs slirp4netns runc haproxy"
        )
    env = dict(os.environ)
    try:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "podman-env.sh"), "--print"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return f"scripts/podman-env.sh failed: {exc}"
    for line in out.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    podman = Podman(env)
    info = podman.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    return podman


def hardened_run_options() -> list[str]:
    """`podman run` options as docs/gateway.md runs the image: the host's network (no
    bridge), our cgroup, and a read-only root with only a tmpfs on /tmp besides the
    volumes the caller adds."""
    return [
        "--network",
        "host",
        "--cgroup-parent",
        CGROUP_PARENT,
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp:rw,size=64m,mode=1777",
    ]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class GatewayContainer:
    """One gateway node in a container, on the host's network (its ports come from
    ``runtime.json`` in its state volume, as with ``SEG_GW_LISTEN_PORT=0``)."""

    podman: Podman
    image: str
    node_id: str
    state_dir: Path  # on the host: bind-mounted at STATE_DIR with :U
    conf_dir: Path  # on the host: read-only at CONF_DIR (certificates, credential)
    env: Mapping[str, str]
    name: str = ""
    url: str = ""  # https://127.0.0.1:port (what seg_cli.demo's helpers call a node's url)
    admin_url: str = ""

    def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.name = unique(f"seg-{self.node_id}")
        (self.state_dir / "runtime.json").unlink(missing_ok=True)
        args = [
            "run",
            "--detach",
            "--name",
            self.name,
            *hardened_run_options(),
            "--volume",
            f"{self.state_dir}:{STATE_DIR}:U",
            "--volume",
            f"{self.conf_dir}:{CONF_DIR}:ro,U",
        ]
        for key, value in {**self.env, **(extra_env or {})}.items():
            args += ["--env", f"{key}={value}"]
        args.append(self.image)
        self.podman.run(*args)

    def wait_ready(self, timeout: float = 120.0, *, ready: bool = True) -> dict[str, Any]:
        """Wait for runtime.json, then for /livez (and /readyz 200 when ``ready``)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            runtime = self.state_dir / "runtime.json"
            if runtime.exists():
                try:
                    data = json.loads(runtime.read_text())
                    self.url = f"https://127.0.0.1:{data['listen_port']}"
                    self.admin_url = f"http://127.0.0.1:{data['admin_port']}"
                    path = "/readyz" if ready else "/livez"
                    r = httpx.get(self.admin_url + path, timeout=5)
                    if r.status_code == 200:
                        return data
                    last = f"{path}: HTTP {r.status_code} {r.text[:300]}"
                except (ValueError, KeyError, httpx.HTTPError) as exc:
                    last = repr(exc)
            state = self.state()
            if state.get("Status") == "exited":
                raise PodmanError(
                    f"{self.name} exited ({state.get('ExitCode')}) during start-up:\n{self.logs()}"
                )
            time.sleep(0.2)
        raise PodmanError(f"{self.name} not ready after {timeout:.0f} s ({last}):\n{self.logs()}")

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = self.podman.inspect("container", self.name)["State"]
        return data

    def exec(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.name, *argv, check=check)

    def stop(self, timeout_s: int = 60) -> subprocess.CompletedProcess[str]:
        return self.podman.run("stop", "--time", str(timeout_s), self.name, timeout=timeout_s + 60)

    def remove(self) -> None:
        if self.name:
            self.podman.run("rm", "--force", "--time", "0", self.name, check=False)

    def logs(self, lines: int = 40) -> str:
        proc = self.podman.run("logs", "--tail", str(lines), self.name, check=False)
        return (proc.stdout + proc.stderr)[-6000:]


def copy_private(files: Mapping[str, Path], conf_dir: Path) -> None:
    """Copy files into ``conf_dir`` (mounted read-only with :U, so the image's user owns
    the copies and can read a 0600 key)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = conf_dir / name
        shutil.copyfile(source, target)
        target.chmod(0o600)


def node_settings(env: Mapping[str, str], paths: Mapping[str, str]) -> dict[str, str]:
    """The ``SEG_GW_*`` part of a process node's environment, with host paths replaced by
    where they are mounted in the container."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith("SEG_GW_"):
            out[key] = paths.get(value, value)
    return out
