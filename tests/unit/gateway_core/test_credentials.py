"""PW1 hashing (scrypt) and PW2 sealing (X25519 SealedBox), shared in seg_contract.crypto,
and the gateway-side helpers in onprem_gateway.core.credentials."""

from __future__ import annotations

import base64

import pytest

from onprem_gateway.core.credentials import (
    basic_authorization,
    password_still_valid,
    substitution_enabled,
    verify_any,
)
from seg_contract.crypto import (
    PasswordHashError,
    SealError,
    generate_cluster_keypair,
    hash_device_password,
    parse_password_hash,
    public_key_is_valid,
    seal,
    unseal,
    verify_device_password,
)
from tests.unit.gateway_core.builders import credential

FAST_N = 2**10  # the minimum cost, to keep the unit tier quick


def test_hash_format_and_verify() -> None:
    stored = hash_device_password("correct horse", salt=b"0123456789abcdef", n=FAST_N)
    prefix, n, r, p, salt, digest = stored.split("$")
    assert (prefix, n, r, p) == ("scrypt", "1024", "8", "1")
    assert base64.b64decode(salt) == b"0123456789abcdef"
    assert len(base64.b64decode(digest)) == 32
    assert verify_device_password(stored, "correct horse")
    assert not verify_device_password(stored, "correct horsf")
    assert not verify_device_password(stored, "")


def test_default_cost_is_2_14_and_salt_is_random() -> None:
    one, two = hash_device_password("pw"), hash_device_password("pw")
    assert one.startswith("scrypt$16384$8$1$") and one != two


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$1024$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # n not a power of two
        "scrypt$2097152$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # n too large
        "scrypt$1024$64$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # r too large
        "scrypt$1048576$32$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # > 64 MiB
        "scrypt$1024$8$99$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # p too large
        "scrypt$1024$8$1$!!!$AAAAAAAAAAAAAAAAAAAAAA==",  # salt not base64
        "scrypt$1024$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",  # salt too short
        "scrypt$1024$8$1$AAAAAAAAAAA=$AAAA",  # hash too short
        "scrypt$1024$8$1$AAAAAAAAAAA=",  # missing field
        "scrypt$+1024$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$1024$8$1$AAAAAAAAAAA=$" + "A" * 600,  # oversized
    ],
)
def test_malformed_or_oversized_hashes_never_match(stored: str) -> None:
    assert not verify_device_password(stored, "anything")
    with pytest.raises(PasswordHashError):
        parse_password_hash(stored)


def test_oversized_presented_password_is_refused_without_hashing() -> None:
    stored = hash_device_password("pw", n=FAST_N)
    assert not verify_device_password(stored, "x" * 5000)


def test_hashing_refuses_bad_parameters() -> None:
    with pytest.raises(PasswordHashError):
        hash_device_password("pw", n=3)
    with pytest.raises(PasswordHashError):
        hash_device_password("", n=FAST_N)
    with pytest.raises(PasswordHashError):
        hash_device_password("pw", salt=b"short", n=FAST_N)


def test_seal_unseal_round_trip() -> None:
    private, public = generate_cluster_keypair()
    assert public_key_is_valid(public) and not public_key_is_valid("nope")
    sealed = seal("upstream p@ss wörd", public)
    assert "upstream" not in sealed
    assert unseal(sealed, private) == "upstream p@ss wörd"
    assert seal("x", public) != seal("x", public)  # ephemeral key per seal


def test_unseal_with_the_wrong_key_fails_typed() -> None:
    _, public = generate_cluster_keypair()
    other_private, _ = generate_cluster_keypair()
    with pytest.raises(SealError, match="wrong key or tampered"):
        unseal(seal("pw2", public), other_private)


def test_tampered_sealed_value_fails_typed() -> None:
    private, public = generate_cluster_keypair()
    raw = bytearray(base64.b64decode(seal("pw2", public)))
    raw[-1] ^= 0x01
    with pytest.raises(SealError):
        unseal(base64.b64encode(bytes(raw)).decode(), private)


@pytest.mark.parametrize(
    ("sealed", "key"),
    [("%%%", None), ("AAAA", None), ("A" * 5000, None), ("AAAA", "short")],
)
def test_garbage_sealed_values_and_keys_fail_typed(sealed: str, key: str | None) -> None:
    private, _ = generate_cluster_keypair()
    with pytest.raises(SealError):
        unseal(sealed, key or private)


def test_seal_refuses_bad_public_key() -> None:
    with pytest.raises(SealError):
        seal("pw", base64.b64encode(b"x" * 31).decode())


def test_error_messages_carry_no_secret() -> None:
    _private, public = generate_cluster_keypair()
    other, _ = generate_cluster_keypair()
    with pytest.raises(SealError) as caught:
        unseal(seal("TOPSECRET", public), other)
    assert "TOPSECRET" not in str(caught.value) and other not in str(caught.value)


def test_gateway_helpers() -> None:
    stored = hash_device_password("device-pw", n=FAST_N)
    assert verify_any("device-pw", ["garbage", stored])
    assert not verify_any("nope", ["garbage", stored])
    assert not verify_any("", [stored])
    assert (
        basic_authorization("CORP\\alice", "pw2:x")
        == "Basic " + base64.b64encode(b"CORP\\alice:pw2:x").decode()
    )
    with pytest.raises(ValueError):
        basic_authorization("a:b", "pw")
    assert substitution_enabled(credential("a", pw1_hashes=(stored,)))
    assert not substitution_enabled(credential("a", pw1_hashes=(stored,), enabled=False))
    assert not substitution_enabled(credential("a"))
    assert not substitution_enabled(None)


def test_a_request_in_flight_keeps_its_password_only_while_the_record_still_holds_it() -> None:
    first, second = "scrypt$first", "scrypt$second"  # compared as stored, never hashed here
    old = credential("a", pw1_hashes=(first,))
    assert password_still_valid(old, old, "dev1")
    assert password_still_valid(old, credential("a", version=2, pw1_hashes=(first, second)), "")
    assert not password_still_valid(old, credential("a", version=2, pw1_hashes=(second,)), "")
    assert not password_still_valid(old, credential("a", version=2, pw1_hashes=()), "")
    assert not password_still_valid(old, credential("a", pw1_hashes=(first,), enabled=False), "")
    assert not password_still_valid(old, None, "dev1")
