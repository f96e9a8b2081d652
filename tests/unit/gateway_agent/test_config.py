"""Configuration: every source, every check, one error listing every problem."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from onprem_gateway.__main__ import main
from onprem_gateway.agent.eas_runner import proxy_settings
from onprem_gateway.agent.logs import configure_logging
from onprem_gateway.config import FIELDS, ConfigError, config_from_wire, load_config
from onprem_gateway.proxy import Limits
from seg_contract.crypto import generate_cluster_keypair, seal, unseal
from seg_contract.signing import LocalSigner

PIN = LocalSigner.generate().public.spki_b64  # the control plane's key, as a node pins it


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("cert.pem", "key.pem", "ca.pem", "policy.json"):
        out[name] = tmp_path / name
        out[name].write_text("x")
    out["credential"] = tmp_path / "credential"
    out["credential"].write_text("segc_c1_k1_secret\n")
    out["cluster.key"] = tmp_path / "cluster.key"
    out["cluster.key"].write_text(generate_cluster_keypair()[0] + "\n")
    return out


def good_env(files: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    return {
        "SEG_GW_TLS_CERT": str(files["cert.pem"]),
        "SEG_GW_TLS_KEY": str(files["key.pem"]),
        "SEG_GW_UPSTREAM_URL": "https://mail.example.com",
        "SEG_GW_API_URL": "https://api.example.com/",
        "SEG_GW_WS_URL": "wss://ws.example.com/prod",
        "SEG_GW_CREDENTIAL": "segc_c1_k1_secret",
        "SEG_GW_POLICY_SIGNING_KEYS": PIN,
        "SEG_GW_STATE_DIR": str(tmp_path / "state"),
    }


def problems(env: dict[str, str], **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(env=env, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_a_minimal_environment_gives_defaults_that_stay_under_api_gateway_limits(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = load_config(env=good_env(files, tmp_path))
    assert config.listen_port == 8443 and config.admin_host == "127.0.0.1"
    # Keepalives follow the cluster's report interval unless the node shortens it.
    assert config.keepalive_interval_s is None and config.reconnect_after_s < 7200
    assert 0 < config.pong_timeout_s <= 30
    assert config.control_plane_allow_plain_http is False
    assert config.workers >= 1 and config.node_id
    assert config.long_poll_timeout_s > 3540
    assert config.connected and config.log_level == "INFO"
    assert "segc" not in repr(config)  # the credential never shows in a repr
    assert config.describe()["credential"] == "<set>"


def test_every_problem_is_reported_at_once(files: dict[str, Path], tmp_path: Path) -> None:
    env = {
        "SEG_GW_LISTEN_PORT": "99999",
        "SEG_GW_WORKERS": "-1",
        "SEG_GW_KEEPALIVE_INTERVAL_S": "700",
        "SEG_GW_RECONNECT_AFTER_S": "7200",
        "SEG_GW_UPSTREAM_URL": "http://mail.example.com",
        "SEG_GW_API_URL": "ftp://x",
        "SEG_GW_LOG_LEVEL": "chatty",
        "SEG_GW_TRUSTED_PROXIES": "10.0.0.0/8,not-a-net",
        "SEG_GW_MAX_SPOOL_BYTES": "10",
        "SEG_GW_LONG_POLL_TIMEOUT_S": "60",
        "SEG_GW_PONG_TIMEOUT_S": "0",
        "SEG_GW_EVENT_FLUSH_INTERVAL_S": "30",
        "SEG_GW_TYPO": "1",
    }
    found = "\n".join(problems(env))
    for expected in (
        "SEG_GW_LISTEN_PORT must be less than or equal to 65535",
        "SEG_GW_WORKERS must be greater than or equal to 0",
        "SEG_GW_KEEPALIVE_INTERVAL_S must be in (0, 540]",
        "SEG_GW_RECONNECT_AFTER_S must be in (0, 7080]",
        "SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP=true",
        "SEG_GW_API_URL: 'ftp://x' must be a https or http URL",
        "SEG_GW_LOG_LEVEL must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        "SEG_GW_TRUSTED_PROXIES: 'not-a-net' is not an IP network",
        "SEG_GW_MAX_SPOOL_BYTES must be greater than or equal to 65536",
        "SEG_GW_LONG_POLL_TIMEOUT_S must be >= 3540",
        "SEG_GW_PONG_TIMEOUT_S must be greater than 0",
        "SEG_GW_EVENT_FLUSH_INTERVAL_S must be in (0, 5]",
        "unknown environment variable SEG_GW_TYPO",
        "SEG_GW_TLS_CERT is required",
        "a control plane needs SEG_GW_API_URL, SEG_GW_WS_URL and SEG_GW_CREDENTIAL",
    ):
        assert expected in found, (expected, found)


@pytest.mark.parametrize(
    ("name", "url"),
    [("SEG_GW_API_URL", "http://api.example.com"), ("SEG_GW_WS_URL", "ws://ws.example.com/p")],
)
def test_a_plain_control_plane_url_needs_the_opt_in(
    files: dict[str, Path], tmp_path: Path, name: str, url: str
) -> None:
    env = good_env(files, tmp_path) | {name: url}
    found = "\n".join(problems(env))
    assert f"{name} is plain" in found and "SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP=true" in found
    config = load_config(env=env | {"SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP": "true"})
    assert config.control_plane_allow_plain_http


def test_missing_files_and_bad_keys_are_named(files: dict[str, Path], tmp_path: Path) -> None:
    env = good_env(files, tmp_path) | {
        "SEG_GW_TLS_CERT": str(tmp_path / "nope.pem"),
        "SEG_GW_UPSTREAM_CA_BUNDLE": str(tmp_path / "nope-ca.pem"),
        "SEG_GW_CLUSTER_KEY_FILE": str(files["ca.pem"]),
    }
    found = "\n".join(problems(env))
    assert "nope.pem is not a readable file" in found
    assert "nope-ca.pem is not a readable file" in found
    assert "does not hold a base64 X25519 key" in found


def test_credential_from_a_file_and_conflicts(files: dict[str, Path], tmp_path: Path) -> None:
    env = good_env(files, tmp_path)
    del env["SEG_GW_CREDENTIAL"]
    config = load_config(env=env | {"SEG_GW_CREDENTIAL_FILE": str(files["credential"])})
    assert config.credential == "segc_c1_k1_secret"
    both = env | {
        "SEG_GW_CREDENTIAL_FILE": str(files["credential"]),
        "SEG_GW_CREDENTIAL": "segc_x",
    }
    assert "not both" in "\n".join(problems(both))
    assert "whitespace" in "\n".join(problems(env | {"SEG_GW_CREDENTIAL": "a\tb"}))


def test_air_gapped_needs_a_policy_file(files: dict[str, Path], tmp_path: Path) -> None:
    env = {
        "SEG_GW_TLS_CERT": str(files["cert.pem"]),
        "SEG_GW_TLS_KEY": str(files["key.pem"]),
        "SEG_GW_UPSTREAM_URL": "https://mail.example.com",
    }
    assert "no policy source" in "\n".join(problems(env))
    policy = {"policy_file": files["policy.json"]}
    # Its policy file is verified with the control plane's keys, or explicitly unsigned.
    assert "SEG_GW_POLICY_SIGNING_KEYS" in "\n".join(problems(env, overrides=policy))
    config = load_config(env={**env, "SEG_GW_POLICY_SIGNING_KEYS": PIN}, overrides=policy)
    assert not config.connected and config.policy_file == files["policy.json"]
    assert config.cluster_id == ""  # the signed file's own
    unsigned = load_config(
        env={**env, "SEG_GW_ALLOW_UNSIGNED_POLICY_FILE": "true"}, overrides=policy
    )
    assert unsigned.allow_unsigned_policy_file and unsigned.policy_signing_keys == ()


def test_a_connected_node_pins_keys_and_names_its_cluster_in_its_credential(
    files: dict[str, Path], tmp_path: Path
) -> None:
    env = good_env(files, tmp_path)
    assert load_config(env=env).cluster_id == "c1"
    assert load_config(env={**env, "SEG_GW_CREDENTIAL": "segc_c-2_k1__x_y"}).cluster_id == "c-2"
    no_pins = {k: v for k, v in env.items() if k != "SEG_GW_POLICY_SIGNING_KEYS"}
    assert "SEG_GW_POLICY_SIGNING_KEYS is required" in "\n".join(problems(no_pins))
    for credential in ("not-a-credential", "segc_c1_k1", "segc__k1_secret", "tok_c1_k1_s"):
        found = problems({**env, "SEG_GW_CREDENTIAL": credential})
        assert any("segc_<cluster>_<key>_<secret>" in p for p in found), credential


def test_toml_file_then_environment_then_command_line(
    files: dict[str, Path], tmp_path: Path
) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        "[gateway]\n"
        f'tls_cert = "{files["cert.pem"]}"\n'
        f'tls_key = "{files["key.pem"]}"\n'
        'upstream_url = "https://mail.example.com"\n'
        "listen_port = 9443\n"
        "workers = 3\n"
        'trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]\n'
        f'policy_file = "{files["policy.json"]}"\n'
        f'policy_signing_keys = ["{PIN}"]\n'
    )
    config = load_config(env={"SEG_GW_WORKERS": "0"}, config_file=toml)
    assert config.listen_port == 9443 and config.workers == 0
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
    )
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert (
        load_config(env={}, config_file=toml, overrides={"policy_file": other}).policy_file == other
    )


def test_bad_toml_and_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("listen_port = [")
    assert "not valid TOML" in "\n".join(problems({}, config_file=bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("listen_prot = 1\n")
    assert "unknown key 'listen_prot'" in "\n".join(problems({}, config_file=unknown))
    assert "cannot read" in "\n".join(problems({}, config_file=tmp_path / "missing.toml"))


def test_upstream_url_with_a_path_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    env = good_env(files, tmp_path) | {"SEG_GW_UPSTREAM_URL": "https://mail/owa"}
    assert "scheme://host[:port] only" in "\n".join(problems(env))


def test_wire_round_trip_keeps_every_value(files: dict[str, Path], tmp_path: Path) -> None:
    env = good_env(files, tmp_path) | {
        "SEG_GW_TRUSTED_PROXIES": "10.1.0.0/16",
        "SEG_GW_CLUSTER_KEY_FILE": str(files["cluster.key"]),
        "SEG_GW_REFRESH_INTERVAL_S": "120",
    }
    config = load_config(env=env)
    wire = config.to_wire()
    assert "credential" not in wire and "api_url" not in wire  # workers never hold it
    worker = config_from_wire(wire)
    assert worker == config.model_copy(
        update={"api_url": "", "ws_url": "", "credential": "", "policy_signing_keys": ()}
    )


def test_check_config_exits_2_with_the_problems(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("SEG_GW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SEG_GW_WORKERS", "lots")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "invalid gateway configuration" in err and "SEG_GW_WORKERS" in err


def test_check_config_prints_the_resolved_config_without_secrets(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in good_env(files, tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert '"credential": "<set>"' in out and "segc_c1_k1_secret" not in out


def test_keygen_writes_a_private_key_and_prints_the_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = tmp_path / "cluster.key"
    assert (
        main(["keygen", "--private-key", str(private), "--public-key", str(tmp_path / "pub")]) == 0
    )
    public = capsys.readouterr().out.strip()
    assert (tmp_path / "pub").read_text().strip() == public
    assert private.stat().st_mode & 0o777 == 0o600
    assert unseal(seal("pw2", public), private.read_text().strip()) == "pw2"
    assert main(["keygen", "--private-key", str(private)]) == 2  # never overwrite


def test_make_cert_writes_a_usable_pair(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert main(["make-cert", "--cert", str(cert), "--key", str(key), "--host", "gw.local"]) == 0
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["make-cert", "--cert", str(cert), "--key", str(key), "--days", "0"]) == 2


def test_every_setting_is_documented_for_operators() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "gateway.md").read_text()
    assert [f.env for f in FIELDS if f"`{f.env}`" not in doc] == []


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", "worker-3")
    try:
        logging.getLogger("onprem_gateway.test").info("policy %s applied", 42)
    finally:
        logging.getLogger().handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "policy 42 applied" and line["process"] == "worker-3"
    assert line["level"] == "INFO" and line["logger"] == "onprem_gateway.test"


def test_edge_limits_are_configurable_and_reach_the_proxy(
    files: dict[str, Path], tmp_path: Path
) -> None:
    env = good_env(files, tmp_path) | {
        "SEG_GW_HEADER_TIMEOUT_S": "12.5",
        "SEG_GW_MAX_CONNECTIONS_PER_IP": "250",
        "SEG_GW_PW1_MAX_FAILURES": "3",
        "SEG_GW_PW1_FAILURE_WINDOW_S": "600",
        "SEG_GW_PUBLIC_HOSTS": "Mail.Example.com., [2001:db8::1], 192.0.2.7",
    }
    config = load_config(env=env)
    assert config.public_hosts == ("mail.example.com", "2001:db8::1", "192.0.2.7")
    settings = proxy_settings(config, 8443)
    assert settings.timeouts.header_s == 12.5
    assert settings.limits.max_connections_per_ip == 250
    assert (settings.limits.pw1_max_failures, settings.limits.pw1_failure_window_s) == (3, 600)
    assert settings.public_hosts == frozenset(config.public_hosts)
    assert config_from_wire(config.to_wire()).public_hosts == config.public_hosts


def test_public_hosts_default_to_the_public_url_and_are_otherwise_unchecked(
    files: dict[str, Path], tmp_path: Path
) -> None:
    env = good_env(files, tmp_path)
    assert load_config(env=env).public_hosts == ()
    with_url = load_config(env=env | {"SEG_GW_PUBLIC_URL": "https://SEG.example.com:8443"})
    assert with_url.public_hosts == ("seg.example.com",)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SEG_GW_HEADER_TIMEOUT_S", "0", "SEG_GW_HEADER_TIMEOUT_S must be in (0, 600]"),
        ("SEG_GW_HEADER_TIMEOUT_S", "601", "SEG_GW_HEADER_TIMEOUT_S must be in (0, 600]"),
        (
            "SEG_GW_MAX_CONNECTIONS_PER_IP",
            "-1",
            "SEG_GW_MAX_CONNECTIONS_PER_IP must be greater than or equal to 0",
        ),
        (
            "SEG_GW_PW1_MAX_FAILURES",
            "0",
            "SEG_GW_PW1_MAX_FAILURES must be greater than or equal to 1",
        ),
        ("SEG_GW_PW1_FAILURE_WINDOW_S", "0", "SEG_GW_PW1_FAILURE_WINDOW_S must be in (0, 86400]"),
        ("SEG_GW_PUBLIC_HOSTS", "https://seg.example.com", "is not a host name"),
        ("SEG_GW_PUBLIC_HOSTS", "seg.example.com:443", "is not a host name"),
    ],
)
def test_edge_limits_are_validated(
    files: dict[str, Path], tmp_path: Path, name: str, value: str, problem: str
) -> None:
    found = problems(good_env(files, tmp_path) | {name: value})
    assert any(problem in p for p in found), found


def test_the_proxy_limits_come_from_a_limits_table_and_the_environment(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # The defaults are the proxy's own: a node that configures nothing keeps them.
    assert proxy_settings(load_config(env=good_env(files, tmp_path)), 8443).limits == Limits()
    toml = tmp_path / "gw.toml"
    toml.write_text(
        '[gateway]\nupstream_url = "https://mail.example.com"\n'
        "[limits]\nmax_body_bytes = 1_048_576\nmax_header_count = 50\n"
    )
    env = good_env(files, tmp_path) | {"SEG_GW_LIMITS_MAX_HEADER_COUNT": "60"}
    config = load_config(env=env, config_file=toml)
    limits = proxy_settings(config, 8443).limits
    assert (limits.max_body_bytes, limits.max_header_count) == (1_048_576, 60)
    assert limits.max_url_bytes == Limits().max_url_bytes
    assert config_from_wire(config.to_wire()).limits == config.limits
    assert json.loads(json.dumps(config.describe()))["limits"]["max_body_bytes"] == 1_048_576


def test_limit_problems_name_their_table_key_or_variable(
    files: dict[str, Path], tmp_path: Path
) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text("[limits]\nmax_body_bytes = 10\nmax_bdy_bytes = 1\n")
    env = good_env(files, tmp_path) | {
        "SEG_GW_LIMITS_MAX_HEADER_COUNT": "many",
        "SEG_GW_LIMITS_TYPO": "1",
    }
    found = problems(env, config_file=toml)
    assert any(p.startswith(f"config file {toml} key limits.max_body_bytes must be") for p in found)
    assert f"config file {toml}: unknown key 'limits.max_bdy_bytes'" in found
    assert any(
        p.startswith("SEG_GW_LIMITS_MAX_HEADER_COUNT must be a valid integer") for p in found
    )
    assert "unknown environment variable SEG_GW_LIMITS_TYPO" in found


def test_a_bad_config_file_stops_the_node_with_every_problem(tmp_path: Path) -> None:
    """What an operator sees: ``seg-gateway run`` exits 2 before starting anything, and
    stderr lists each problem on its own line."""
    toml = tmp_path / "gw.toml"
    toml.write_text('listen_port = "http"\nworkers = 100\nlog_format = "xml"\nlisten_prot = 1\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEG_GW_")}
    done = subprocess.run(
        [sys.executable, "-m", "onprem_gateway", "run", "--config", str(toml)],
        env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "seg-gateway: invalid gateway configuration:"
    where = f"config file {toml} key"
    for expected in (
        f"  - {where} listen_port must be a valid integer",
        f"  - {where} workers must be less than or equal to 64",
        f"  - {where} log_format must be 'text' or 'json'",
        f"  - config file {toml}: unknown key 'listen_prot'",
        "  - SEG_GW_UPSTREAM_URL is required",
        "  - no policy source",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
