"""The shipped deployment files, checked offline with the tools that read them:
the Kubernetes manifests against the API schemas (kubernetes-validate, strict), the
compose file against the Compose Specification (check-jsonschema's bundled schema), the
HAProxy configuration with `haproxy -c`, the systemd unit with `systemd-analyze`; and
what must agree between them and the gateway (ports, uid, probes, grace periods).
Running them is test_site.py's and test_load_balancer.py's job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from onprem_gateway.config import FIELDS
from tests.container import deploy_files as files

IMAGE_UID = 10001
EVENT_FLUSH_DEADLINE_S = 10  # the node's last access-event delivery at shutdown
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")  # oldest still common .. newest known


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_manifests_are_valid_objects(version: str) -> None:
    objects = files.manifests()
    assert {doc["kind"] for docs in objects.values() for doc in docs} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
    }
    for name, docs in objects.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} invalid for Kubernetes {version}: {exc}")


def test_kubernetes_validation_rejects_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field is refused."""
    deployment = files.kubernetes_object("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = files.yaml.safe_load((files.KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(files.manifests())


def test_the_deployment_runs_two_drainable_unprivileged_replicas() -> None:
    deployment = files.kubernetes_object("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    config = files.configmap_toml()["gateway"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"eas": config["listen_port"], "admin": config["admin_port"]}
    assert config["admin_host"] == "0.0.0.0"  # the kubelet probes the pod's address
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    # SIGKILL must not come before the drain: preStop + grace + the last events.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = pre_stop + config["shutdown_grace_s"] + EVENT_FLUSH_DEADLINE_S
    assert pod["terminationGracePeriodSeconds"] > drain
    # The only writable places are volumes: the state directory and /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/var/lib/seg-gateway", "/tmp"}
    # The ConfigMap's file paths are where the Deployment mounts the Secrets.
    mounted = [path for path, m in mounts.items() if m.get("readOnly")]
    for key in ("credential_file", "tls_cert", "tls_key"):
        assert any(config[key].startswith(path + "/") for path in mounted), key
    assert container["args"][-1].startswith(mounts["/etc/seg-gateway/config"]["mountPath"])


def test_the_configmap_uses_only_known_gateway_keys() -> None:
    known = {spec.name for spec in FIELDS}
    config = files.configmap_toml()
    assert list(config) == ["gateway"]
    assert set(config["gateway"]) <= known, set(config["gateway"]) - known


def test_service_budget_and_policy_select_the_deployments_pods() -> None:
    labels = files.kubernetes_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = files.kubernetes_object("Service", "seg-gateway")["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["externalTrafficPolicy"] == "Local"  # the device's own address
    assert [p["targetPort"] for p in service["ports"]] == ["eas"]
    pdb = files.kubernetes_object("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] == 1
    policy = files.kubernetes_object("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    config = files.configmap_toml()["gateway"]
    assert allowed == {config["listen_port"], config["admin_port"]}
    secret = files.kubernetes_object("Secret")
    volumes = files.kubernetes_object("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert secret["metadata"]["name"] in {v.get("secret", {}).get("secretName") for v in volumes}


def test_the_compose_file_follows_the_compose_specification() -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(files.COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_site_matches_the_haproxy_configuration() -> None:
    site = files.compose()
    env = files.env_file(files.SITE_ENV_EXAMPLE)
    lb = files.haproxy_defaults()
    gateways = [name for name in site["services"] if name.startswith("gateway-")]
    assert len(gateways) == 2
    for index, name in enumerate(gateways, start=1):
        service = site["services"][name]
        settings = files.compose_environment(name, env)
        assert service["read_only"] is True
        assert service["user"] == f"{IMAGE_UID}:{IMAGE_UID}"
        assert any(t.startswith("/tmp") for t in service["tmpfs"])
        assert [v.split(":")[1] for v in service["volumes"]] == ["/var/lib/seg-gateway"]
        # HAProxy finds each node by its service name, EAS on 8443, /readyz on 9090.
        host, _, port = lb[f"SEG_NODE{index}"].partition(":")
        assert host == name
        assert port == "8443" and lb[f"SEG_NODE{index}_ADMIN_PORT"] == "9090"  # image defaults
        assert settings["SEG_GW_ADMIN_HOST"] == "0.0.0.0"
        assert settings["SEG_GW_LISTEN_PLAIN_HTTP"] == "true"
        # The nodes trust the site network, where HAProxy is.
        subnet = files.interpolate(site["networks"]["site"]["ipam"]["config"][0]["subnet"], env)
        assert settings["SEG_GW_TRUSTED_PROXIES"] == subnet
        # The runtime waits longer than the node drains.
        grace = float(settings["SEG_GW_SHUTDOWN_GRACE_S"]) + EVENT_FLUSH_DEADLINE_S
        assert int(service["stop_grace_period"].removesuffix("s")) > grace
        assert settings["SEG_GW_NODE_ID"] == name
    haproxy = site["services"]["haproxy"]
    assert "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert lb["SEG_LB_BIND"].endswith(":8443")
    assert any(p.endswith(":8443") for p in haproxy["ports"])


def test_compose_refuses_to_start_without_the_site_settings() -> None:
    """A missing mail server URL is an error with a message, not an empty setting."""
    with pytest.raises(KeyError, match="SEG_UPSTREAM_URL"):
        files.compose_environment("gateway-1", {})


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    from seg_local.tls import make_local_tls  # noqa: PLC0415

    tls = make_local_tls(tmp_path / "tls")
    pem = tmp_path / "gateway.pem"
    pem.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
        "SEG_LB_CERT": str(pem),
        "SEG_LB_ADMIN_SOCKET": str(tmp_path / "admin.sock"),
    }
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(files.HAPROXY_CFG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The only warnings: the compose service names do not resolve outside compose.
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address 'gateway-" in line for line in warnings), warnings


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_verifies_and_is_hardened() -> None:
    unit = files.systemd_unit()
    executable = unit["ExecStart"][0].split()[0]
    verify = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", str(files.SYSTEMD_UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The program is installed on the VM, not here: that is the one complaint allowed.
    problems = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if line.strip() and f"Command {executable} is not executable" not in line
    ]
    assert problems == [], problems
    security = subprocess.run(
        [
            str(SYSTEMD_ANALYZE),
            "security",
            "--offline=yes",
            "--threshold=25",  # exposure 2.5 of 10 ("OK"); the unit measures 1.8
            str(files.SYSTEMD_UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-3000:]
    assert unit["DynamicUser"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["seg-gateway"]
    assert int(unit["LimitNOFILE"][0]) >= 65536
    assert unit["KillMode"] == ["mixed"]  # SIGTERM to the node; it stops its workers
    assert int(unit["TimeoutStopSec"][0]) > 30 + EVENT_FLUSH_DEADLINE_S
