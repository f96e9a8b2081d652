"""The node's pinned policy signing keys and its clock-skew tolerance, as configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from onprem_gateway.config import config_from_wire, load_config
from seg_contract.signing import LocalSigner
from tests.unit.gateway_agent.test_config import files, good_env, problems  # noqa: F401

ONE, TWO = LocalSigner.generate(), LocalSigner.generate()


def test_keys_are_pinned_from_a_comma_separated_variable(
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    env = good_env(files, tmp_path)
    env["SEG_GW_POLICY_SIGNING_KEYS"] = f"{ONE.public.spki_b64}, {TWO.public.spki_b64}"
    config = load_config(env=env)
    assert [k.kid for k in config.policy_signing_keys] == [ONE.kid, TWO.kid]
    assert config.policy_clock_skew_s == 300.0
    assert config.describe()["policy_signing_keys"] == [ONE.kid, TWO.kid]


def test_keys_are_pinned_from_a_toml_list_that_may_hold_pem(
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pem = ONE.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f'policy_signing_keys = ["""{pem}""", "{TWO.public.spki_b64}"]\npolicy_clock_skew_s = 60\n'
    )
    env = good_env(files, tmp_path)
    del env["SEG_GW_POLICY_SIGNING_KEYS"]  # the file's list, not the environment's
    config = load_config(env=env, config_file=config_file)
    assert [k.kid for k in config.policy_signing_keys] == [ONE.kid, TWO.kid]
    assert config.policy_clock_skew_s == 60


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SEG_GW_POLICY_SIGNING_KEYS", "not-a-key", "key 1: not base64"),
        ("SEG_GW_POLICY_SIGNING_KEYS", f"{ONE.public.spki_b64},AAAA", "key 2"),
        ("SEG_GW_POLICY_CLOCK_SKEW_S", "-1", "must be in [0, 600]"),
        ("SEG_GW_POLICY_CLOCK_SKEW_S", "601", "must be in [0, 600]"),
    ],
)
def test_a_bad_key_or_skew_is_a_clear_problem(
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    name: str,
    value: str,
    message: str,
) -> None:
    env = {**good_env(files, tmp_path), name: value}
    found = problems(env)
    assert any(message in p and (name in p or "SKEW" in name) for p in found), found


def test_workers_never_receive_the_keys(
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    env = {**good_env(files, tmp_path), "SEG_GW_POLICY_SIGNING_KEYS": ONE.public.spki_b64}
    wire = load_config(env=env).to_wire()
    assert "policy_signing_keys" not in wire and "policy_clock_skew_s" not in wire
    assert config_from_wire(wire).policy_signing_keys == ()
