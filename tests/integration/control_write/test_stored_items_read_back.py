"""Items as the adapters stored them before the DynamoDB toolkit (hand-marshalled,
literal low-level attribute values) read back the same through today's code, and
today's writes store the same attribute values: no migration of stored data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lambdas.adapters.dynamodb_access_history import DynamoDbAccessHistory
from lambdas.adapters.dynamodb_audit_log import DynamoDbAuditLog
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.adapters.dynamodb_gateway_nodes import DynamoDbGatewayNodes
from lambdas.domain.access_history import HistoryEvent
from lambdas.domain.audit import AuditEvent
from lambdas.domain.compliance import ComplianceState, DeviceRecord, EnrollmentState
from lambdas.domain.credentials import StoredCredential
from lambdas.domain.email_view import AccessObservation
from lambdas.domain.gateway_nodes import NodeReport
from lambdas.domain.mdm_events import EnrollmentEvent
from lambdas.domain.policy_bootstrap import BootstrapMark
from lambdas.domain.policy_log import (
    LOG_RETENTION,
    Change,
    ChangeKind,
    LogRecord,
    LogState,
    Watermark,
    initial_watermark,
)
from lambdas.domain.records import ClusterRecord
from seg_contract import ClusterSettings, entry_key
from seg_contract.digest import to_hex

from .conftest import T0, World

AT = "2026-11-27T09:00:00.000000Z"


def _put(world: World, table: str, item: dict[str, Any]) -> None:
    world.aws.dynamodb.put_item(TableName=world.aws.settings.table(table), Item=item)


def _stored(world: World, table: str, key: dict[str, Any]) -> dict[str, Any]:
    response = world.aws.dynamodb.get_item(
        TableName=world.aws.settings.table(table), Key=key, ConsistentRead=True
    )
    return dict(response["Item"])


# --- devices ------------------------------------------------------------------------------

OLD_DEVICE: dict[str, Any] = {
    "mdm_device_id": {"S": "mdm-old"},
    "kind": {"S": "device"},
    "user": {"S": "alice@example.com"},
    "eas_device_ids": {"L": [{"S": "dev-a"}, {"S": "dev-b"}]},
    "platform": {"S": "ios"},
    "model": {"S": "iPhone"},
    "os_version": {"S": "17.1"},
    "managed": {"BOOL": True},
    "enrollment_state": {"S": "enrolled"},
    "enrolled_at": {"S": AT},
    "enrollment_changed_at": {"S": AT},
    "checkin_partition": {"S": "enrolled"},
    "last_checkin_at": {"S": "2026-11-27T10:00:00.000000Z"},
    "checked_in": {"BOOL": True},
    "compromised": {"BOOL": False},
    "encrypted": {"BOOL": True},
    "passcode": {"BOOL": True},
    "compliance_state": {"S": "compliant"},
    "compliance_reasons": {"L": []},
    "evaluated_at": {"S": "2026-11-27T10:00:01.000000Z"},
    "retired_keys": {"SS": ["k1", "k2"]},
}


def test_a_device_item_stored_by_the_old_code_reads_back_the_same(world: World) -> None:
    _put(world, "devices", OLD_DEVICE)
    _put(
        world,
        "devices",
        {
            "mdm_device_id": {"S": "#email\x1f" + entry_key("alice@example.com", "dev-a")},
            "kind": {"S": "email_link"},
            "email_device_key": {"S": entry_key("alice@example.com", "dev-a")},
            "owner": {"S": "mdm-old"},
        },
    )
    assert world.devices.get("mdm-old") == DeviceRecord(
        mdm_device_id="mdm-old",
        user="alice@example.com",
        eas_device_ids=("dev-a", "dev-b"),
        enrollment_state=EnrollmentState.ENROLLED,
        enrolled_at=T0,
        enrollment_changed_at=T0,
        platform="ios",
        model="iPhone",
        os_version="17.1",
        managed=True,
        last_checkin_at=T0 + timedelta(hours=1),
        compromised=False,
        encrypted=True,
        passcode=True,
        compliance_state=ComplianceState.COMPLIANT,
        compliance_reasons=(),
        evaluated_at=T0 + timedelta(hours=1, seconds=1),
        retired_keys=frozenset({"k1", "k2"}),
    )
    assert world.devices.find_by_email_device("alice@example.com", "dev-a") == "mdm-old"
    page, cursor = world.devices.list_devices(10)
    assert [d.mdm_device_id for d in page] == ["mdm-old"] and cursor is None


def test_an_enrollment_stores_the_attribute_values_the_old_code_stored(world: World) -> None:
    event = EnrollmentEvent(
        event_id="e-1",
        occurred_at=T0,
        mdm_device_id="mdm-new",
        user="bob",
        eas_device_ids=("dev-x",),
        platform="android",
        model="Pixel",
        os_version="14",
    )
    assert world.devices.apply_enrollment(event)
    assert _stored(world, "devices", {"mdm_device_id": {"S": "mdm-new"}}) == {
        "mdm_device_id": {"S": "mdm-new"},
        "kind": {"S": "device"},
        "user": {"S": "bob"},
        "eas_device_ids": {"L": [{"S": "dev-x"}]},
        "platform": {"S": "android"},
        "model": {"S": "Pixel"},
        "os_version": {"S": "14"},
        "managed": {"BOOL": True},
        "enrollment_state": {"S": "enrolled"},
        "enrolled_at": {"S": AT},
        "enrollment_changed_at": {"S": AT},
        "checkin_partition": {"S": "enrolled"},
        "last_checkin_at": {"S": AT},
        "checked_in": {"BOOL": False},
        "compliance_state": {"S": "unknown"},
    }
    link = "#email\x1f" + entry_key("bob", "dev-x")
    assert _stored(world, "devices", {"mdm_device_id": {"S": link}}) == {
        "mdm_device_id": {"S": link},
        "kind": {"S": "email_link"},
        "email_device_key": {"S": entry_key("bob", "dev-x")},
        "owner": {"S": "mdm-new"},
    }


# --- clusters -----------------------------------------------------------------------------

SETTINGS = ClusterSettings().model_dump_json()
D1, D2 = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


def test_a_cluster_item_stored_by_the_old_code_reads_back_the_same(world: World) -> None:
    _put(
        world,
        "clusters",
        {
            "cluster_id": {"S": "c-old"},
            "kind": {"S": "cluster"},
            "name": {"S": "hq"},
            "created_at": {"S": AT},
            "policy_version": {"N": "7"},
            "settings": {"S": SETTINGS},
            "settings_version": {"N": "3"},
            "committed_version": {"N": "6"},
            "digest": {"S": D2},
            "recent_digests": {
                "L": [
                    {"M": {"v": {"N": "5"}, "d": {"S": D1}}},
                    {"M": {"v": {"N": "6"}, "d": {"S": D2}}},
                ]
            },
            "public_key": {"S": "pk"},
            "seeded_at": {"S": AT},
            "credentials": {"M": {}},
        },
    )
    # An item from before committed versions, its bootstrap begun.
    _put(
        world,
        "clusters",
        {
            "cluster_id": {"S": "c-legacy"},
            "kind": {"S": "cluster"},
            "name": {"S": "branch"},
            "created_at": {"S": AT},
            "policy_version": {"N": "4"},
            "settings": {"S": SETTINGS},
            "settings_version": {"N": "0"},
            "bootstrap_counter": {"N": "4"},
            "bootstrap_at": {"S": AT},
        },
    )
    old = ClusterRecord(
        cluster_id="c-old",
        name="hq",
        created_at=T0,
        policy_version=7,
        settings=ClusterSettings(),
        settings_version=3,
        watermark=Watermark(6, int(D2, 16), ((5, int(D1, 16)), (6, int(D2, 16)))),
        public_key="pk",
        seeded_at=T0,
    )
    legacy = ClusterRecord(
        cluster_id="c-legacy",
        name="branch",
        created_at=T0,
        policy_version=4,
        settings=ClusterSettings(),
        settings_version=0,
        watermark=initial_watermark(ClusterSettings()),
        legacy=True,
        bootstrap=BootstrapMark(counter=4, at=T0),
    )
    assert world.clusters.get_cluster("c-old") == old
    assert world.clusters.get_cluster("c-legacy") == legacy
    assert world.clusters.list_clusters() == [legacy, old]
    assert world.clusters.next_version("c-old") == 8


def test_a_new_cluster_stores_the_attribute_values_the_old_code_stored(world: World) -> None:
    world.clusters.create_cluster("c-new", "hq", T0, public_key="pk")
    start = initial_watermark(ClusterSettings())
    assert _stored(world, "clusters", {"cluster_id": {"S": "c-new"}}) == {
        "cluster_id": {"S": "c-new"},
        "kind": {"S": "cluster"},
        "name": {"S": "hq"},
        "created_at": {"S": AT},
        "policy_version": {"N": "0"},
        "settings": {"S": SETTINGS},
        "settings_version": {"N": "0"},
        "committed_version": {"N": "0"},
        "digest": {"S": to_hex(start.digest)},
        "recent_digests": {"L": [{"M": {"v": {"N": "0"}, "d": {"S": to_hex(start.digest)}}}]},
        "public_key": {"S": "pk"},
    }


# --- the policy log -----------------------------------------------------------------------

EXPIRES = str(int((T0 + LOG_RETENTION).timestamp()))


def test_log_records_stored_by_the_old_code_read_back_the_same(world: World) -> None:
    _put(
        world,
        "policy_log",
        {
            "cluster_id": {"S": "c-1"},
            "version": {"N": "1"},
            "state": {"S": "committed"},
            "changes": {
                "L": [
                    {
                        "M": {
                            "kind": {"S": "device"},
                            "key": {"S": "k-1"},
                            "old": {"NULL": True},
                            "new": {"S": D1},
                        }
                    },
                    {
                        "M": {
                            "kind": {"S": "settings"},
                            "key": {"S": "settings"},
                            "old": {"S": D1},
                            "new": {"S": D2},
                        }
                    },
                ]
            },
            "settled_at": {"S": AT},
            "expires_at": {"N": EXPIRES},
        },
    )
    _put(
        world,
        "policy_log",
        {
            "cluster_id": {"S": "c-1"},
            "version": {"N": "2"},
            "state": {"S": "pending"},
            "first_seen": {"S": AT},
            "expires_at": {"N": EXPIRES},
        },
    )
    assert list(world.log.read("c-1", 0, 5)) == [
        LogRecord(
            version=1,
            state=LogState.COMMITTED,
            changes=(
                Change(ChangeKind.DEVICE, "k-1", None, int(D1, 16)),
                Change(ChangeKind.SETTINGS, "settings", int(D1, 16), int(D2, 16)),
            ),
        ),
        LogRecord(version=2, state=LogState.PENDING, first_seen=T0),
    ]


def test_log_writes_store_the_attribute_values_the_old_code_stored(world: World) -> None:
    assert world.log.mark_pending("c-1", 3, T0)
    assert not world.log.mark_pending("c-1", 3, T0)
    key = {"cluster_id": {"S": "c-1"}, "version": {"N": "3"}}
    assert _stored(world, "policy_log", key) == {
        **key,
        "state": {"S": "pending"},
        "first_seen": {"S": AT},
        "expires_at": {"N": EXPIRES},
    }
    assert world.log.abandon("c-1", 3, T0, fence=True)
    assert _stored(world, "policy_log", key) == {
        **key,
        "state": {"S": "abandoned"},
        "first_seen": {"S": AT},
        "settled_at": {"S": AT},
        "expires_at": {"N": EXPIRES},
    }


# --- gateway credentials (on the cluster item) ----------------------------------------------


def test_credentials_stored_by_the_old_code_read_back_the_same(world: World) -> None:
    created, revoked = T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()
    _put(
        world,
        "clusters",
        {
            "cluster_id": {"S": "c-cred"},
            "kind": {"S": "cluster"},
            "credentials": {
                "M": {
                    "k-1": {"M": {"sha256": {"S": "aa"}, "created_at": {"S": created}}},
                    "k-2": {
                        "M": {
                            "sha256": {"S": "bb"},
                            "created_at": {"S": revoked},
                            "revoked_at": {"S": revoked},
                        }
                    },
                }
            },
        },
    )
    active = StoredCredential("c-cred", "k-1", "aa", T0)
    gone = StoredCredential("c-cred", "k-2", "bb", T0 + timedelta(hours=1), T0 + timedelta(hours=1))
    assert world.credentials.get_credential("c-cred", "k-1") == active
    assert world.credentials.get_credential("c-cred", "k-3") is None
    assert list(world.credentials.list_credentials("c-cred")) == [active, gone]
    world.credentials.add_credential(StoredCredential("c-cred", "k-3", "cc", T0))
    stored = _stored(world, "clusters", {"cluster_id": {"S": "c-cred"}})
    assert stored["credentials"]["M"]["k-3"] == {
        "M": {"sha256": {"S": "cc"}, "created_at": {"S": created}}
    }


# --- gateway nodes ----------------------------------------------------------------------------


def test_a_node_item_stored_by_the_old_code_reads_back_the_same(world: World) -> None:
    nodes = DynamoDbGatewayNodes(world.aws.settings.table("gateway_nodes"), world.aws.dynamodb)
    _put(
        world,
        "gateway_nodes",
        {
            "cluster_id": {"S": "c-1"},
            "node_id": {"S": "n-1"},
            "last_seen": {"S": AT},
            "gateway_version": {"S": "1.2"},
            "reported_at": {"S": AT},
            "digest_check": {"S": "in_sync"},
            "policy_rejections": {"N": "2"},
            "last_rejection": {"S": "bad_signature"},
            "last_rejection_at": {"S": AT},
            "policy_version": {"N": "9"},
            "policy_age_s": {"N": "12.5"},
            "spool_depth": {"N": "0"},
            "digest_mismatches": {"N": "1"},
        },
    )
    _put(world, "gateway_nodes", {"cluster_id": {"S": "c-1"}, "node_id": {"S": "n-2"}})
    assert nodes.list_nodes("c-1") == [
        NodeReport(
            cluster_id="c-1",
            node_id="n-1",
            last_seen=AT,
            policy_version=9,
            policy_age_s=12.5,
            spool_depth=0,
            gateway_version="1.2",
            reported_at=AT,
            digest_check="in_sync",
            digest_mismatches=1,
            policy_rejections=2,
            last_rejection="bad_signature",
            last_rejection_at=AT,
        ),
        NodeReport(cluster_id="c-1", node_id="n-2", last_seen=""),
    ]


# --- the email-device view --------------------------------------------------------------------


def test_an_email_device_row_stored_by_the_old_code_reads_back_the_same(world: World) -> None:
    view = DynamoDbEmailDevices(world.aws.settings.table("email_devices"), world.aws.dynamodb)
    strings = {
        "user": "carol",
        "device_id": "dev-1",
        "device_type": "iPhone",
        "user_agent": "Apple-iPhone",
        "last_seen": AT,
        "event_id": "ev-1",
        "last_command": "Sync",
        "access_state": "allowed",
        "reason": "",
        "rule": "",
        "protocol_version": "16.1",
        "last_node": "n-1",
        "cluster_id": "",
    }
    # A row from before rows were keyed by cluster and carried ``enforced``.
    key = entry_key("carol", "dev-1")
    _put(
        world,
        "email_devices",
        {
            "email_device_key": {"S": key},
            "view": {"S": "all"},
            **{name: {"S": value} for name, value in strings.items()},
        },
    )
    row = AccessObservation(email_device_key=key, enforced=True, **strings)
    assert view.get_many([key]) == {key: row}
    assert view.all_rows() == [row]


# --- access history -----------------------------------------------------------------------------


def test_access_history_stored_by_the_old_code_reads_back_and_merges(world: World) -> None:
    history = DynamoDbAccessHistory(world.aws.settings.table("access_history"), world.aws.dynamodb)
    old = HistoryEvent(AT, "ev-1", "n-1", "Sync", "allow", "", "", True, 200)
    _put(
        world,
        "access_history",
        {
            "observation_key": {"S": "k-1"},
            "events": {"S": '[["' + AT + '","ev-1","n-1","Sync","allow","","",true,200]]'},
            "version": {"N": "1"},
            "expires_at": {"N": "1"},
        },
    )
    assert history.get_many(["k-1", "k-2"]) == {"k-1": [old]}
    new = HistoryEvent(
        "2026-11-27T10:00:00.000000Z", "ev-2", "n-1", "Ping", "block", "r", "x", True, 403
    )
    history.add("k-1", [new], T0)
    assert history.get_many(["k-1"]) == {"k-1": [new, old]}
    assert _stored(world, "access_history", {"observation_key": {"S": "k-1"}})["version"] == {
        "N": "2"
    }


# --- the audit log --------------------------------------------------------------------------------


def test_audit_records_stored_by_the_old_code_read_back_page_by_page(world: World) -> None:
    log = DynamoDbAuditLog(world.aws.settings.table("audit_log"), world.aws.dynamodb)
    events = []
    for i in range(3):
        seq = f"{AT}#{i:04d}"
        _put(
            world,
            "audit_log",
            {
                "month": {"S": AT[:7]},
                "seq": {"S": seq},
                "at": {"S": AT},
                "actor": {"S": "admin"},
                "role": {"S": "admin"},
                "action": {"S": "device.block"},
                "target": {"S": f"t-{i}"},
                "reason": {"S": ""},
                "expires_at": {"N": "1"},
                "after": {"S": '{"override": "block"}'},
            },
        )
        events.append(
            AuditEvent(
                seq, AT, "admin", "admin", "device.block", f"t-{i}", None, {"override": "block"}, ""
            )
        )
    assert log.read_month(AT[:7], before_seq=None, limit=2) == ([events[2], events[1]], True)
    assert log.read_month(AT[:7], before_seq=events[1].seq, limit=2) == ([events[0]], False)
