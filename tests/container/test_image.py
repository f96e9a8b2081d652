"""The image itself: its metadata, a clear error for an unusable configuration, and the
shipped deployment files' configurations accepted by the image as they mount them
(`seg-gateway check-config` in a read-only container as uid 10001)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.container import deploy_files as files
from tests.container.podman import IMAGE_UID, STATE_DIR, Podman, hardened_run_options

pytestmark = pytest.mark.timeout(900)  # the first test may build the image


def run_once(
    podman: Podman,
    image: str,
    *args: str,
    env: dict[str, str] | None = None,
    mounts: tuple[str, ...] = (),
    entrypoint: str = "",
) -> Any:
    argv = ["run", "--rm", *hardened_run_options()]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for mount in mounts:
        argv += ["--volume", mount]
    return podman.run(*argv, image, *args, check=False)


def test_the_image_runs_the_node_as_an_unprivileged_user(
    podman: Podman, gateway_image: str
) -> None:
    image = podman.inspect("image", gateway_image)
    config = image["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"  # numeric: runAsNonRoot can check
    assert config["Entrypoint"] == ["seg-gateway", "run"]  # exec form: the node is PID 1
    assert config["StopSignal"] == "SIGTERM"
    assert STATE_DIR in config["Volumes"]
    health = image.get("Healthcheck") or config.get("Healthcheck")  # kept by --format docker
    assert health is not None and health["Test"][:2] == ["CMD", "python"], image
    assert any(e.startswith("SEG_GW_STATE_DIR=") for e in config["Env"])


def test_an_unusable_configuration_exits_2_naming_every_problem(
    podman: Podman, gateway_image: str
) -> None:
    result = run_once(podman, gateway_image, env={"SEG_GW_WORKERS": "many"})
    assert result.returncode == 2, result.stdout + result.stderr
    for expected in ("SEG_GW_WORKERS", "SEG_GW_UPSTREAM_URL is required"):
        assert expected in result.stderr, result.stderr


def _secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_kubernetes_configuration_is_accepted_as_the_deployment_mounts_it(
    podman: Podman, gateway_image: str, tmp_path: Path
) -> None:
    from seg_local.tls import make_local_tls  # noqa: PLC0415

    config = files.kubernetes_object("ConfigMap")["data"]["gateway.toml"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.toml").write_text(config)
    tls = make_local_tls(tmp_path / "made")
    _secret(tmp_path / "tls" / "tls.crt", tls.cert.read_text())
    _secret(tmp_path / "tls" / "tls.key", tls.key.read_text())
    _secret(tmp_path / "credential" / "credential", "segc_c-example_k1_" + "k" * 40)
    container = files.kubernetes_object("Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = tuple(
        f"{tmp_path / Path(m['mountPath']).name}:{m['mountPath']}:ro,U"
        for m in container["volumeMounts"]
        if m["mountPath"].startswith("/etc/seg-gateway/")
    )
    assert len(mounts) == 3
    result = run_once(
        podman,
        gateway_image,
        "check-config",
        *container["args"],
        mounts=mounts,
        entrypoint="seg-gateway",
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["admin_host"] == "0.0.0.0"
    assert resolved["credential"] == "<set>"
    assert resolved["state_dir"] == STATE_DIR


def test_the_compose_configuration_is_accepted_with_the_secret_as_compose_mounts_it(
    podman: Podman, gateway_image: str, tmp_path: Path
) -> None:
    env = files.compose_environment("gateway-1", files.env_file(files.SITE_ENV_EXAMPLE))
    service = files.compose()["services"]["gateway-1"]
    (secret,) = service["secrets"]
    credential = _secret(tmp_path / "credential", "segc_c-example_k1_" + "c" * 40)
    result = run_once(
        podman,
        gateway_image,
        "check-config",
        env=env,
        mounts=(f"{credential}:/run/secrets/{secret['target']}:ro,U",),
        entrypoint="seg-gateway",
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["listen_plain_http"] is True
    assert resolved["trusted_proxies"] == [env["SEG_GW_TRUSTED_PROXIES"]]
    assert resolved["node_id"] == "gateway-1"
