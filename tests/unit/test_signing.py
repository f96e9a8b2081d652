"""Signed policy (``seg_contract.signing``): what is signed, what verifies, and every
way a verification must fail, with the reason the metric is labelled with."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from seg_contract.http import POLICY_SIGNATURE_HEADER, POLICY_STATEMENT_HEADER
from seg_contract.signing import (
    EMPTY_SHA256,
    Applied,
    Disposition,
    Kind,
    LocalSigner,
    RejectReason,
    SignatureRejected,
    SignedMessage,
    SignedPayload,
    Statement,
    TrustedKey,
    Verifier,
    b64url,
    decode_record,
    encode_record,
    issue,
    load_public_key,
    unb64url,
)

SIGNER = LocalSigner.generate()
OTHER = LocalSigner.generate()
NOW_MS = 1_764_244_800_000
CLUSTER = "c-0123456789"
PAYLOAD = b'{"cluster_id":"c-0123456789","version":42,"devices":[]}'


def signed(
    kind: Kind = Kind.SNAPSHOT,
    *,
    version: int = 42,
    payload: bytes = PAYLOAD,
    cluster_id: str = CLUSTER,
    issued_at_ms: int = NOW_MS,
    since_version: int = 0,
    signer: LocalSigner = SIGNER,
) -> SignedPayload:
    return issue(
        signer,
        cluster_id=cluster_id,
        kind=kind,
        version=version,
        payload=payload,
        issued_at_ms=issued_at_ms,
        since_version=since_version,
    )


def verify(
    item: SignedPayload,
    *,
    kinds: Kind | tuple[Kind, ...] = Kind.SNAPSHOT,
    applied: Applied | None = None,
    now_ms: int = NOW_MS,
    live: bool = True,
    since_version: int | None = None,
    verifier: Verifier | None = None,
):
    return (verifier or Verifier([SIGNER.public])).verify(
        item,
        cluster_id=CLUSTER,
        kinds=kinds,
        applied=applied or Applied(),
        now_ms=now_ms,
        live=live,
        since_version=since_version,
    )


def rejected(item: SignedPayload, **kwargs: object) -> RejectReason:
    with pytest.raises(SignatureRejected) as caught:
        verify(item, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def statement_bytes(item: SignedPayload) -> bytes:
    return unb64url(item.statement_token, "statement", 1024)


def with_statement(item: SignedPayload, data: bytes) -> SignedPayload:
    """The same signature over other statement bytes (what a forger can do)."""
    return SignedPayload(b64url(data), item.signature_token, item.payload)


# --- the valid case -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_a_signed_payload_of_every_kind_verifies(kind: Kind) -> None:
    since = 40 if kind is Kind.DELTA else 0
    result = verify(signed(kind, since_version=since), kinds=kind)
    assert result.apply
    assert result.statement.kind is kind
    assert result.statement.version == 42
    assert result.statement.kid == SIGNER.kid
    assert result.payload == PAYLOAD


def test_the_statement_is_compact_sorted_json_with_the_eight_members() -> None:
    data = statement_bytes(signed(Kind.DELTA, since_version=40))
    assert data == (
        b'{"cluster_id":"c-0123456789","format":1,"issued_at_ms":1764244800000,'
        b'"kid":"'
        + SIGNER.kid.encode()
        + b'","kind":"delta","payload_sha256":"'
        + hashlib.sha256(PAYLOAD).hexdigest().encode()
        + b'","since_version":40,"version":42}'
    )


def test_the_signature_is_der_ecdsa_p256_sha256_over_the_statement_bytes() -> None:
    """What KMS Sign returns for ECC_NIST_P256 / ECDSA_SHA_256 (MessageType RAW)."""
    item = signed()
    der = unb64url(item.signature_token, "signature", 80)
    assert der[0] == 0x30 and len(der) <= 72
    SIGNER.public.key.verify(der, statement_bytes(item), ec.ECDSA(hashes.SHA256()))


def test_key_ids_are_fingerprints_of_the_key() -> None:
    der = SIGNER.public.spki_der
    assert SIGNER.kid == hashlib.sha256(der).hexdigest()[:24]
    assert SIGNER.kid != OTHER.kid


def test_an_empty_payload_is_the_304_confirmation() -> None:
    result = verify(signed(Kind.CONFIRM, payload=b""), kinds=Kind.CONFIRM)
    assert result.statement.payload_sha256 == EMPTY_SHA256


# --- the failure table --------------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _forged_statement(**changes: object) -> SignedPayload:
    """A genuine signature, with the statement edited (still canonical JSON)."""
    item = signed()
    fields = json.loads(statement_bytes(item))
    fields.update(changes)
    data = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return with_statement(item, data)


FAILURES: list[tuple[str, SignedPayload, dict[str, object], RejectReason]] = [
    (
        "tampered payload byte",
        SignedPayload(signed().statement_token, signed().signature_token, _flip(PAYLOAD, 10)),
        {},
        RejectReason.PAYLOAD_MISMATCH,
    ),
    ("tampered statement: version", _forged_statement(version=43), {}, RejectReason.BAD_SIGNATURE),
    (
        "tampered statement: payload hash",
        _forged_statement(payload_sha256=hashlib.sha256(b"{}").hexdigest()),
        {},
        RejectReason.BAD_SIGNATURE,
    ),
    (
        "tampered statement: issue time",
        _forged_statement(issued_at_ms=NOW_MS + 1),
        {},
        RejectReason.BAD_SIGNATURE,
    ),
    (
        "wrong key: signed by another key under the trusted kid",
        SignedPayload(
            signed().statement_token,
            b64url(OTHER.sign(statement_bytes(signed()))),
            PAYLOAD,
        ),
        {},
        RejectReason.BAD_SIGNATURE,
    ),
    ("unknown key id", signed(signer=OTHER), {}, RejectReason.UNKNOWN_KEY),
    ("wrong cluster", signed(cluster_id="c-9999999999"), {}, RejectReason.WRONG_CLUSTER),
    ("wrong kind", signed(Kind.CHANGE), {"kinds": Kind.SNAPSHOT}, RejectReason.WRONG_KIND),
    (
        "replayed older snapshot",
        signed(version=41),
        {"applied": Applied(version=42)},
        RejectReason.REPLAYED,
    ),
    (
        "replayed older key set",
        signed(Kind.KEYS, version=2),
        {"kinds": Kind.KEYS, "applied": Applied(keys_version=3)},
        RejectReason.REPLAYED,
    ),
    (
        "delta for another request",
        signed(Kind.DELTA, since_version=30),
        {"kinds": Kind.DELTA, "since_version": 40},
        RejectReason.REPLAYED,
    ),
    (
        "issue time beyond the allowed skew",
        signed(issued_at_ms=NOW_MS + 5 * 60_000 + 1),
        {},
        RejectReason.ISSUED_IN_FUTURE,
    ),
    (
        "issue time in the future, also when re-verified from disk",
        signed(issued_at_ms=NOW_MS + 86_400_000),
        {"live": False},
        RejectReason.ISSUED_IN_FUTURE,
    ),
    (
        "live input issued too long ago",
        signed(issued_at_ms=NOW_MS - 15 * 60_000 - 1),
        {},
        RejectReason.EXPIRED,
    ),
    (
        "truncated signature",
        SignedPayload(
            signed().statement_token,
            b64url(unb64url(signed().signature_token, "signature", 80)[:-6]),
            PAYLOAD,
        ),
        {},
        RejectReason.BAD_SIGNATURE,
    ),
    (
        "signature of zero bytes",
        SignedPayload(signed().statement_token, "", PAYLOAD),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "signature: base64 with padding",
        SignedPayload(signed().statement_token, signed().signature_token + "==", PAYLOAD),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "signature: standard base64 alphabet",
        SignedPayload(signed().statement_token, "ab+/" * 10, PAYLOAD),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "signature longer than any P-256 signature",
        SignedPayload(signed().statement_token, b64url(b"0" * 200), PAYLOAD),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: not base64url",
        SignedPayload("not*base64", signed().signature_token, PAYLOAD),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: non-canonical base64url (trailing bits)",
        SignedPayload("YR", signed().signature_token, PAYLOAD),  # "YQ" is b"a"
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: not JSON",
        with_statement(signed(), b"{not json"),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: a member missing",
        with_statement(signed(), b'{"cluster_id":"c-0123456789","format":1}'),
        {},
        RejectReason.MALFORMED,
    ),
    ("statement: an extra member", _forged_statement(extra=1), {}, RejectReason.MALFORMED),
    ("statement: unknown kind", _forged_statement(kind="policy"), {}, RejectReason.MALFORMED),
    ("statement: unknown format", _forged_statement(format=2), {}, RejectReason.MALFORMED),
    ("statement: version as float", _forged_statement(version=42.0), {}, RejectReason.MALFORMED),
    ("statement: version as bool", _forged_statement(version=True), {}, RejectReason.MALFORMED),
    ("statement: negative version", _forged_statement(version=-1), {}, RejectReason.MALFORMED),
    (
        "statement: version beyond 2^53",
        _forged_statement(version=2**53 + 1),
        {},
        RejectReason.MALFORMED,
    ),
    ("statement: kid not hex", _forged_statement(kid="K" * 24), {}, RejectReason.MALFORMED),
    (
        "statement: sha256 upper case",
        _forged_statement(payload_sha256="A" * 64),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: since_version on a snapshot",
        _forged_statement(since_version=1),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: cluster id with an escape",
        _forged_statement(cluster_id='c"1'),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: duplicate member",
        with_statement(
            signed(),
            statement_bytes(signed())[:-1] + b',"version":43}',
        ),
        {},
        RejectReason.MALFORMED,
    ),
    (
        "statement: longer than 1024 bytes",
        with_statement(signed(), b" " * 1100),
        {},
        RejectReason.MALFORMED,
    ),
]


@pytest.mark.parametrize(
    ("item", "kwargs", "reason"),
    [(f[1], f[2], f[3]) for f in FAILURES],
    ids=[f[0] for f in FAILURES],
)
def test_verification_refuses_with_the_reason(
    item: SignedPayload, kwargs: dict[str, object], reason: RejectReason
) -> None:
    assert rejected(item, **kwargs) is reason


def test_a_non_canonical_statement_is_refused_even_with_a_genuine_signature() -> None:
    """One encoding per statement: whitespace or another key order never verifies, so no
    two parsers can read one signed statement differently."""
    fields = json.loads(statement_bytes(signed()))
    for data in (
        json.dumps(fields, sort_keys=True).encode(),  # with spaces
        json.dumps(dict(reversed(list(fields.items()))), separators=(",", ":")).encode(),
    ):
        item = SignedPayload(b64url(data), b64url(SIGNER.sign(data)), PAYLOAD)
        assert rejected(item) is RejectReason.MALFORMED


@given(st.integers(min_value=0, max_value=len(PAYLOAD) - 1), st.integers(1, 255))
def test_any_change_to_the_payload_is_refused(index: int, xor: int) -> None:
    item = signed()
    data = PAYLOAD[:index] + bytes([PAYLOAD[index] ^ xor]) + PAYLOAD[index + 1 :]
    assert rejected(SignedPayload(item.statement_token, item.signature_token, data)) in {
        RejectReason.PAYLOAD_MISMATCH
    }


ITEM = signed()


@given(st.integers(min_value=0, max_value=len(ITEM.statement_token) - 1), st.sampled_from("AQgw-_"))
def test_any_change_to_the_statement_token_is_refused(index: int, char: str) -> None:
    token = ITEM.statement_token
    changed = token[:index] + char + token[index + 1 :]
    if changed == token:
        return
    with pytest.raises(SignatureRejected):
        verify(SignedPayload(changed, ITEM.signature_token, PAYLOAD))


# --- version rules per kind -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "version", "applied", "disposition"),
    [
        (Kind.SNAPSHOT, 42, Applied(version=42), Disposition.APPLY),  # a resync at V
        (Kind.SNAPSHOT, 43, Applied(version=42), Disposition.APPLY),
        (Kind.DELTA, 41, Applied(version=42), Disposition.IGNORE),  # raced with pushes
        (Kind.DELTA, 42, Applied(version=42), Disposition.APPLY),
        (Kind.CHANGE, 42, Applied(version=42), Disposition.IGNORE),  # a duplicate push
        (Kind.CHANGE, 43, Applied(version=42), Disposition.APPLY),
        (Kind.PONG, 41, Applied(version=42), Disposition.IGNORE),  # overtook a push
        (Kind.PONG, 42, Applied(version=42, confirmed_at_ms=NOW_MS), Disposition.IGNORE),
        (Kind.PONG, 42, Applied(version=42, confirmed_at_ms=NOW_MS - 1), Disposition.APPLY),
        (Kind.CONFIRM, 42, Applied(version=42, confirmed_at_ms=NOW_MS - 1), Disposition.APPLY),
        (Kind.KEYS, 3, Applied(keys_version=3), Disposition.IGNORE),
        (Kind.KEYS, 4, Applied(keys_version=3), Disposition.APPLY),
        (Kind.RESYNC, 1, Applied(version=42), Disposition.APPLY),
        (Kind.REVOKED, 0, Applied(version=42), Disposition.APPLY),
    ],
)
def test_version_rules(
    kind: Kind, version: int, applied: Applied, disposition: Disposition
) -> None:
    since = 40 if kind is Kind.DELTA else 0
    item = signed(kind, version=version, since_version=min(since, version))
    assert verify(item, kinds=kind, applied=applied).disposition is disposition


def test_a_statement_within_the_allowed_skew_verifies() -> None:
    assert verify(signed(issued_at_ms=NOW_MS + 5 * 60_000)).apply


def test_stored_input_is_not_refused_for_its_age_only_live_input_is() -> None:
    old = signed(issued_at_ms=NOW_MS - 30 * 86_400_000)
    assert verify(old, live=False).statement.issued_at_ms == old.statement().issued_at_ms


def test_the_limits_are_configurable() -> None:
    strict = Verifier([SIGNER.public], max_skew_ms=1000, max_age_ms=2000)
    with pytest.raises(SignatureRejected) as caught:
        verify(signed(issued_at_ms=NOW_MS + 1001), verifier=strict)
    assert caught.value.reason is RejectReason.ISSUED_IN_FUTURE
    with pytest.raises(ValueError):
        Verifier([SIGNER.public], max_skew_ms=10, max_age_ms=5)


def test_two_keys_are_accepted_during_a_rotation() -> None:
    both = Verifier([SIGNER.public, OTHER.public])
    assert verify(signed(), verifier=both).statement.kid == SIGNER.kid
    assert verify(signed(signer=OTHER), verifier=both).statement.kid == OTHER.kid
    assert both.kids == {SIGNER.kid, OTHER.kid}


def test_the_payload_must_say_what_the_statement_says() -> None:
    result = verify(signed(Kind.DELTA, since_version=40), kinds=Kind.DELTA)
    result.require_fields(cluster_id=CLUSTER, version=42, since_version=40)
    with pytest.raises(SignatureRejected) as caught:
        result.require_fields(cluster_id=CLUSTER, version=43, since_version=40)
    assert caught.value.reason is RejectReason.PAYLOAD_MISMATCH


def test_statements_cannot_be_built_malformed() -> None:
    with pytest.raises(SignatureRejected):
        Statement(
            kid=SIGNER.kid,
            cluster_id=CLUSTER,
            kind=Kind.DELTA,
            version=1,
            issued_at_ms=NOW_MS,
            payload_sha256=EMPTY_SHA256,
            since_version=2,
        )


# --- transport ------------------------------------------------------------------------------


def test_http_headers_carry_the_tokens_and_the_body_is_the_payload() -> None:
    item = signed()
    headers = item.headers()
    assert set(headers) == {POLICY_STATEMENT_HEADER, POLICY_SIGNATURE_HEADER}
    lowered = {k.lower(): v for k, v in headers.items()}

    class CaseInsensitive(dict[str, str]):
        def get(self, key: str, default: object = None):  # type: ignore[override]
            return super().get(key.lower(), default)

    received = SignedPayload.from_headers(CaseInsensitive(lowered), PAYLOAD)
    assert verify(received).apply


def test_an_answer_without_the_headers_is_unsigned() -> None:
    with pytest.raises(SignatureRejected) as caught:
        SignedPayload.from_headers({}, PAYLOAD)
    assert caught.value.reason is RejectReason.UNSIGNED


def test_the_websocket_envelope_carries_the_exact_payload() -> None:
    payload = '{"type":"change","cluster_id":"c-0123456789","reason":"é ✓"}'.encode()
    item = signed(Kind.CHANGE, payload=payload)
    text = item.envelope().model_dump_json()
    received = SignedPayload.from_envelope(SignedMessage.model_validate_json(text))
    assert received.payload == payload
    assert verify(received, kinds=Kind.CHANGE).apply


def test_an_envelope_payload_that_is_not_utf8_is_refused() -> None:
    item = signed(Kind.CHANGE)
    text = (
        f'{{"type":"signed","statement":"{item.statement_token}",'
        f'"signature":"{item.signature_token}","payload":"\\ud800"}}'
    )
    with pytest.raises(ValidationError):
        SignedMessage.model_validate_json(text)
    constructed = SignedMessage.model_construct(
        statement=item.statement_token, signature=item.signature_token, payload="\ud800"
    )
    with pytest.raises(SignatureRejected) as caught:
        SignedPayload.from_envelope(constructed)
    assert caught.value.reason is RejectReason.MALFORMED


def test_records_store_the_bytes_as_received_and_concatenate() -> None:
    first, second = signed(), signed(Kind.CHANGE, version=43, payload=b"\x00\n{}")
    data = encode_record(first) + encode_record(second)
    one, end = decode_record(data)
    two, end2 = decode_record(data[end:])
    assert (one, two) == (first, second)
    assert end + end2 == len(data)
    assert decode_record(data, end) == (second, end2)  # in place: nothing before it copied
    assert verify(one).apply


@pytest.mark.parametrize(
    "data",
    [b"", b"no newline", b"[]\n", b'{"format":"other"}\n', encode_record(signed())[:-1]],
)
def test_a_damaged_record_is_malformed(data: bytes) -> None:
    with pytest.raises(SignatureRejected) as caught:
        decode_record(data)
    assert caught.value.reason is RejectReason.MALFORMED


# --- keys -------------------------------------------------------------------------------------


def test_public_keys_load_from_base64_spki_or_pem() -> None:
    b64 = SIGNER.public.spki_b64
    pem = SIGNER.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert load_public_key(b64).kid == load_public_key(pem).kid == SIGNER.kid
    assert load_public_key(f"  {b64}\n") == SIGNER.public


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(b"junk").decode(), "SubjectPublicKeyInfo"),
        (
            base64.b64encode(
                rsa.generate_private_key(65537, 2048)
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).decode(),
            "P-256",
        ),
        (
            base64.b64encode(
                ec.generate_private_key(ec.SECP384R1())
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).decode(),
            "P-256",
        ),
        ("-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----", "PEM"),
    ],
)
def test_other_keys_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_public_key(text)


def test_local_signer_round_trips_through_pem() -> None:
    again = LocalSigner.from_pem(SIGNER.private_pem())
    assert again.kid == SIGNER.kid
    assert isinstance(again.public, TrustedKey)
    with pytest.raises(ValueError):
        LocalSigner(ec.generate_private_key(ec.SECP384R1()))
