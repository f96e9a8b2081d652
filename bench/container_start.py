"""The gateway image: its size, and the time from `podman run` to a ready node
(goal: < 250 MB, ready < 3 s).

The image is built from this checkout on the Debian-package base with the project's
scripts (``scripts/build-image.sh``; cached layers make a rebuild cheap), or ``--image``
names one already built. Each run starts a container as docs/gateway.md does (read-only
root, the state volume, a tmpfs on /tmp, host network, one EAS worker unless
``--workers``), air-gapped from a policy file, in front of the demo mail server; the
clock stops when ``/readyz`` answers 200. Half the runs start with an empty state
volume, half with the one the previous run left (a restart).

    .venv/bin/python bench/container_start.py [--runs 6] [--workers 1] [--image TAG]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg_local.demo_mail import DemoMailServer, server_ssl_context  # noqa: E402
from seg_local.tls import make_local_tls  # noqa: E402
from tests.container.podman import (  # noqa: E402
    CONF_DIR,
    GatewayContainer,
    Podman,
    copy_private,
    probe,
    unique,
)
from tests.container.policy import POLICY_PIN, allow_policy_file  # noqa: E402


def _ready_seconds(node: GatewayContainer, timeout: float = 60.0) -> float:
    start = time.monotonic()
    node.start()
    runtime = node.state_dir / "runtime.json"
    deadline = start + timeout
    with httpx.Client(timeout=2, trust_env=False) as http:
        while time.monotonic() < deadline:
            try:
                data = json.loads(runtime.read_text())
                url = f"http://127.0.0.1:{data['admin_port']}/readyz"
                if http.get(url).status_code == 200:
                    return time.monotonic() - start
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{node.name} not ready after {timeout:.0f} s:\n{node.logs()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--image", default="", help="an image already built (default: build)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    found = probe()
    if isinstance(found, str):
        print(f"container_start: skipped: {found}")
        return 0
    podman: Podman = found
    image = args.image
    built = False
    if not image:
        image = f"localhost/seg-gateway:{unique('bench')}"
        start = time.monotonic()
        podman.script("build-image.sh", image)
        print(f"image build (cached layers where unchanged): {time.monotonic() - start:.1f} s")
        built = True
    info = podman.inspect("image", image)
    print(f"image {image}: {info['Size'] / 1e6:.0f} MB (goal < 250 MB)")
    layers = json.loads(podman.run("history", "--format", "json", image).stdout)
    for layer in layers:
        if layer.get("size", 0) >= 1_000_000:
            created = " ".join(str(layer.get("CreatedBy", "")).split())[:90]
            print(f"  layer {layer['size'] / 1e6:6.1f} MB  {created}")

    mail = DemoMailServer()
    try:
        with tempfile.TemporaryDirectory(prefix="seg-bench-") as tmp_name:
            tmp = Path(tmp_name)
            tls = make_local_tls(tmp / "tls")
            port = mail.start(ssl_context=server_ssl_context(tls.cert, tls.key))
            conf = tmp / "conf"
            copy_private(
                {
                    "tls.crt": tls.cert,
                    "tls.key": tls.key,
                    "ca.pem": tls.ca_cert,
                    "policy.json": allow_policy_file(
                        tmp / "policy.json", [("bench", "bench1")], "bench"
                    ),
                },
                conf,
            )
            env = {
                "SEG_GW_LISTEN_HOST": "127.0.0.1",
                "SEG_GW_LISTEN_PORT": "0",
                "SEG_GW_ADMIN_PORT": "0",
                "SEG_GW_TLS_CERT": f"{CONF_DIR}/tls.crt",
                "SEG_GW_TLS_KEY": f"{CONF_DIR}/tls.key",
                "SEG_GW_UPSTREAM_URL": f"https://127.0.0.1:{port}",
                "SEG_GW_UPSTREAM_CA_BUNDLE": f"{CONF_DIR}/ca.pem",
                "SEG_GW_POLICY_FILE": f"{CONF_DIR}/policy.json",
                "SEG_GW_POLICY_SIGNING_KEYS": POLICY_PIN,
                "SEG_GW_WORKERS": str(args.workers),
            }
            fresh: list[float] = []
            restart: list[float] = []
            state = tmp / "state"
            for run in range(args.runs):
                if run % 2 == 0:
                    state = tmp / f"state{run}"
                    state.mkdir()
                node = GatewayContainer(podman, image, "bench", state, conf, env)
                try:
                    seconds = _ready_seconds(node)
                    (fresh if run % 2 == 0 else restart).append(seconds)
                    node.stop(30)
                finally:
                    node.remove()
    finally:
        mail.stop()
        if built:
            podman.run("rmi", image, check=False)

    for name, values in (("empty state volume", fresh), ("restart, same volume", restart)):
        if values:
            print(
                f"podman run -> /readyz 200, {name}, workers={args.workers}: "
                f"median {statistics.median(values):.2f} s, max {max(values):.2f} s "
                f"over {len(values)} runs (goal < 3 s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
