"""Pure parts of the API side: gateway credential format and checks, the email-view
fold (newest wins per device), activity counts and batch fingerprints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lambdas.domain import email_view
from lambdas.domain.credentials import StoredCredential
from lambdas.domain.errors import RevokedCredential, Unauthenticated, UnknownCredential
from lambdas.usecases.gateway_auth import (
    authenticate_gateway,
    bearer_token,
    gateway_token,
    issue_credential,
    parse_credential,
)
from seg_contract import AccessEvent, AccessEventBatch

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


class Store:
    def __init__(self, *stored: StoredCredential) -> None:
        self.stored = {(c.cluster_id, c.key_id): c for c in stored}

    def get_credential(self, cluster_id: str, key_id: str) -> StoredCredential | None:
        return self.stored.get((cluster_id, key_id))


def stored(issued, revoked: bool = False) -> StoredCredential:
    return StoredCredential(
        issued.cluster_id, issued.key_id, issued.secret_sha256, T0, T0 if revoked else None
    )


def test_an_issued_credential_authenticates_to_its_cluster_and_key() -> None:
    issued = issue_credential("c-a1")
    principal = authenticate_gateway(issued.token, Store(stored(issued)))  # type: ignore[arg-type]
    assert (principal.cluster_id, principal.key_id) == ("c-a1", issued.key_id)
    assert issued.token.split("_", 3)[3] not in issued.secret_sha256


@pytest.mark.parametrize(
    "token",
    ["", "segc", "segc_c-a1_k1", "abcd_c-a1_k1_secret", "segc_C-A1_k1_s", "segc__k1_s", "x" * 300],
)
def test_malformed_credentials_are_unknown(token: str) -> None:
    with pytest.raises(UnknownCredential):
        parse_credential(token)


def test_wrong_secret_and_unknown_key_are_unknown_revoked_is_revoked() -> None:
    issued = issue_credential("c-a1")
    store = Store(stored(issued))
    with pytest.raises(UnknownCredential):
        authenticate_gateway(issued.token[:-1] + "!", store)  # type: ignore[arg-type]
    with pytest.raises(UnknownCredential):
        authenticate_gateway(issue_credential("c-a1").token, store)  # type: ignore[arg-type]
    with pytest.raises(RevokedCredential):
        authenticate_gateway(issued.token, Store(stored(issued, revoked=True)))  # type: ignore[arg-type]


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(Unauthenticated) as refused:
            bearer_token(bad)
        assert not isinstance(refused.value, UnknownCredential)  # no gateway mark
        with pytest.raises(UnknownCredential):  # a gateway's: a rejected credential
            gateway_token(bad)
    assert gateway_token("Bearer segc_x") == "segc_x"


def ev(at: datetime, decision: str = "allow", device: str = "Dev1", eid: str = "") -> AccessEvent:
    return AccessEvent(
        event_id=eid or uuid.uuid4().hex,
        at=at,
        node_id="n1",
        user="EXAMPLE\\Alice",
        device_id=device,
        command="Sync",
        decision=decision,
        reason="r",
    )


def test_fold_keeps_the_newest_event_per_device_in_any_order() -> None:
    events = [
        ev(T0 + timedelta(seconds=s), d) for s, d in ((3, "block"), (1, "allow"), (2, "allow"))
    ]
    events.append(ev(T0, device="other"))
    for ordering in (events, list(reversed(events))):
        folded = email_view.newest_per_device(ordering, "c-a1")
        by_device = {o.device_id: o for o in folded}
        assert by_device["dev1"].access_state == "block"
        assert by_device["dev1"].user == "alice"
        assert set(by_device) == {"dev1", "other"}


def test_activity_counts_requests_and_refusals_per_minute() -> None:
    counts = email_view.activity(
        [
            ev(T0),
            ev(T0 + timedelta(seconds=59), "block"),
            ev(T0 + timedelta(minutes=1), "quarantine"),
        ]
    )
    assert [(c.minute, c.requests, c.blocks) for c in counts] == [
        ("2026-11-27T02:00", 2, 1),
        ("2026-11-27T02:01", 1, 1),
    ]


def test_batch_fingerprint_ignores_order_and_node_but_not_content() -> None:
    a, b = ev(T0, eid="a" * 32), ev(T0, eid="b" * 32)
    one = AccessEventBatch(node_id="n1", events=(a, b))
    two = AccessEventBatch(node_id="n2", events=(b, a))
    three = AccessEventBatch(node_id="n1", events=(a,))
    assert email_view.batch_fingerprint(one) == email_view.batch_fingerprint(two)
    assert email_view.batch_fingerprint(one) != email_view.batch_fingerprint(three)


def test_event_times_are_clamped_to_their_receipt() -> None:
    # A gateway clock 4 minutes ahead: its block is stamped when it was received, so a
    # real request one second later wins (it used to win for 5 minutes).
    ahead = ev(T0 + timedelta(minutes=4), "block")
    [clamped] = email_view.newest_per_device([ahead], "c-a1", received_at=T0)
    assert clamped.last_seen == "2026-11-27T02:00:00.000000Z"
    later = ev(T0 + timedelta(seconds=1))
    [row] = email_view.newest_per_device([later], "c-a1", received_at=T0 + timedelta(seconds=1))
    assert row.newer_than(clamped)
    # Activity minutes and node sightings are clamped the same way.
    batch = AccessEventBatch(node_id="n1", events=(ev(T0 + timedelta(days=1)),))
    assert [c.minute for c in email_view.activity(batch.events, T0)] == ["2026-11-27T02:00"]
    [seen] = email_view.nodes_seen(batch, "c-a1", T0)
    assert seen.last_seen == "2026-11-27T02:00:00.000000Z"


def test_a_device_has_one_row_per_observing_cluster() -> None:
    event = ev(T0)
    [a] = email_view.newest_per_device([event], "c-a", received_at=T0)
    [b] = email_view.newest_per_device([event], "c-b", received_at=T0)
    assert a.email_device_key == b.email_device_key
    assert a.observation_key != b.observation_key
    assert email_view.split_observation_key(a.observation_key) == ("c-a", a.email_device_key)
    # A row stored before rows had observers reads as its own key, with no cluster.
    assert email_view.split_observation_key(a.email_device_key) == ("", a.email_device_key)
