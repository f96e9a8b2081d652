"""The one definition of the control plane's cloud resources.

Tables, queues and functions are declared here as data. Three readers build on it and
nothing else names a table or a queue:

- the Lambda code (``lambdas.settings``) reads each resource's physical name from the
  environment variable named here;
- the CDK stack (``cdk/``) creates every table, queue and function from these
  declarations and grants each function exactly the access it declares;
- the local runtime (``seg_local``) creates the same tables and queues in moto and wires
  the same handlers to the same triggers.

This module imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class KeyType(StrEnum):
    S = "S"
    N = "N"


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = KeyType.S


@dataclass(frozen=True)
class Index:
    name: str
    partition: Key
    sort: Key | None = None


@dataclass(frozen=True)
class Table:
    """A DynamoDB table (on-demand). ``env`` carries its physical name to the code."""

    id: str
    partition: Key
    sort: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    purpose: str = ""

    @property
    def env(self) -> str:
        return f"SEG_TABLE_{self.id.upper()}"


@dataclass(frozen=True)
class Queue:
    """An SQS queue with its dead-letter queue. ``env`` carries its URL to the code."""

    id: str
    fifo: bool
    visibility_timeout_s: int
    max_receive_count: int
    purpose: str = ""

    @property
    def env(self) -> str:
        return f"SEG_QUEUE_{self.id.upper()}_URL"


class Trigger(StrEnum):
    HTTP_API = "http_api"
    SQS = "sqs"
    WEBSOCKET_CONNECT = "$connect"
    WEBSOCKET_DISCONNECT = "$disconnect"
    WEBSOCKET_DEFAULT = "$default"
    SCHEDULE = "schedule"


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    READ_WRITE = "read_write"
    # Read and add items, never change or delete one (an append-only record: the audit
    # log). IAM grants the reads and PutItem; the code adds with attribute_not_exists.
    APPEND = "append"


@dataclass(frozen=True)
class Function:
    """A Lambda function: its handler, its trigger, and every resource it may touch.
    CDK grants exactly this (least privilege); tests check the code stays inside it."""

    id: str
    handler: str  # "module.path.function"
    trigger: Trigger
    purpose: str
    tables: dict[str, Access] = field(default_factory=dict)
    sends_to: tuple[str, ...] = ()  # queue ids
    consumes: str | None = None  # queue id, for Trigger.SQS
    posts_to_connections: bool = False  # API Gateway Management API (WebSocket pushes)
    sends_email: bool = False  # SES, from the configured notice sender identity
    # Emits policy to gateways (snapshots, deltas, pushes, pongs): may sign with the
    # stack's policy signing keys (kms:Sign and kms:GetPublicKey on those keys only).
    signs_policy: bool = False
    schedule_minutes: int | None = None  # for Trigger.SCHEDULE
    batch_size: int = 10
    timeout_s: int = 30
    memory_mb: int = 512
    reserved_concurrency: int | None = None


# --- Tables -------------------------------------------------------------------------

DEVICES = Table(
    id="devices",
    partition=Key("mdm_device_id"),
    indexes=(
        # Sparse: only enrolled devices carry checkin_partition, so the scheduled
        # check-in queries just them, oldest check-in first.
        Index("by_checkin", Key("checkin_partition"), Key("last_checkin_at")),
        # Find the MDM record behind an email device (user + EAS DeviceId).
        Index("by_email_device", Key("email_device_key")),
    ),
    purpose="MDM device records: identity, posture, compliance, manual override",
)
POLICY_ENTRIES = Table(
    id="policy_entries",
    partition=Key("cluster_id"),
    sort=Key("entry_key"),
    purpose="Per cluster: the latest state of every access-list entry and credential, "
    "with the policy version that wrote it (snapshot = consistent query)",
)
POLICY_LOG = Table(
    id="policy_log",
    partition=Key("cluster_id"),
    sort=Key("version", KeyType.N),
    # Records expire 30 days after their version settled: a delta since an older
    # version is answered 410 (take the snapshot).
    ttl_attribute="expires_at",
    purpose="Per cluster and policy version: committed (with the keys it changed and "
    "their digest terms) or abandoned; the committed version only moves over settled "
    "versions (delta = the keys changed in (N, W])",
)
CLUSTERS = Table(
    id="clusters",
    partition=Key("cluster_id"),
    purpose="Gateway clusters: settings, policy version counter, hashed credentials, "
    "public sealing key",
)
GATEWAY_NODES = Table(
    id="gateway_nodes",
    partition=Key("cluster_id"),
    sort=Key("node_id"),
    purpose="Each node's last reported state (policy version, age, spool depth)",
)
CONNECTIONS = Table(
    id="connections",
    partition=Key("connection_id"),
    indexes=(Index("by_cluster", Key("cluster_id"), Key("node_id")),),
    ttl_attribute="expires_at",
    purpose="Open WebSocket connections of gateway nodes (API Gateway closes them "
    "after 2 h; TTL removes what $disconnect missed)",
)
EMAIL_DEVICES = Table(
    id="email_devices",
    # The key names one cluster's observation of an email device
    # (``<cluster>\x1e<user>\x1f<device id>``): a cluster's gateways write only their own.
    partition=Key("email_device_key"),
    # Every row, newest first: the roster's rebuild reads it (never a console request).
    indexes=(Index("by_recent", Key("view"), Key("last_seen")),),
    # Only the per-minute activity counters (``stats#<minute>``) carry it; device rows
    # never expire.
    ttl_attribute="expires_at",
    purpose="The dashboard's view: one row per (cluster, user, EAS DeviceId) a gateway saw",
)
DEVICE_EVENTS = Table(
    id="device_events",
    partition=Key("event_id"),
    # One MDM device's events, newest first: the device page's compliance history.
    indexes=(Index("by_device", Key("mdm_device_id"), Key("received_at")),),
    ttl_attribute="expires_at",
    purpose="Device Services events received (idempotency by event id, audit)",
)
MANUAL_OVERRIDES = Table(
    id="manual_overrides",
    partition=Key("email_device_key"),
    purpose="Console admins' allow/block overrides per (user, EAS DeviceId); they win "
    "over compliance and also cover devices the MDM never enrolled",
)
ROSTER = Table(
    id="roster",
    partition=Key("pk"),
    sort=Key("sk"),
    # Only journal entries expire; the published snapshot's chunks are deleted when a
    # newer one replaces them.
    ttl_attribute="expires_at",
    purpose="The console's device roster: compact snapshots (head + chunks) and the "
    "journal of changes since, which warm API functions hold and replay in memory",
)
ACCESS_HISTORY = Table(
    id="access_history",
    partition=Key("observation_key"),
    ttl_attribute="expires_at",
    purpose="The last access events of each (cluster, email device), bounded in count",
)
AUDIT_LOG = Table(
    id="audit_log",
    partition=Key("month"),
    sort=Key("seq"),
    ttl_attribute="expires_at",  # log_retention_days after the action
    purpose="Append-only record of every console action: who, when, what, before -> after, reason",
)
DEVICE_NOTES = Table(
    id="device_notes",
    partition=Key("email_device_key"),
    purpose="Operators' notes on email devices",
)
NOTICES = Table(
    id="notices",
    partition=Key("notice_key"),
    ttl_attribute="expires_at",  # the per-device markers; settings never expire
    purpose="Notices to users of blocked or quarantined devices: template and per-cluster "
    "remediation text, and one marker per device (at most one notice per state change)",
)
TABLES: tuple[Table, ...] = (
    DEVICES,
    POLICY_ENTRIES,
    POLICY_LOG,
    CLUSTERS,
    GATEWAY_NODES,
    CONNECTIONS,
    EMAIL_DEVICES,
    DEVICE_EVENTS,
    MANUAL_OVERRIDES,
    ROSTER,
    ACCESS_HISTORY,
    AUDIT_LOG,
    DEVICE_NOTES,
    NOTICES,
)

# --- Queues -------------------------------------------------------------------------

COMPLIANCE_QUEUE = Queue(
    id="compliance",
    fifo=True,  # message group = MDM device id: one device's changes stay in order
    visibility_timeout_s=180,  # six times the reader's timeout, as AWS recommends
    max_receive_count=5,
    purpose="The seed's AWSegCompliance queue: device state changes to evaluate",
)
PAYLOAD_QUEUE = Queue(
    id="payload",
    fifo=False,
    visibility_timeout_s=180,
    max_receive_count=5,
    purpose="The seed's AWMegPayload queue: access-event batches from gateways",
)

NOTICE_QUEUE = Queue(
    id="notices",
    fifo=False,
    visibility_timeout_s=180,
    max_receive_count=5,
    purpose="Notices to send: one message per device that became blocked or quarantined",
)

QUEUES: tuple[Queue, ...] = (COMPLIANCE_QUEUE, PAYLOAD_QUEUE, NOTICE_QUEUE)

# --- Functions ----------------------------------------------------------------------

RW, R, W = Access.READ_WRITE, Access.READ, Access.WRITE

FUNCTIONS: tuple[Function, ...] = (
    Function(
        id="api",
        handler="lambdas.handlers.api.handler",
        trigger=Trigger.HTTP_API,
        purpose="The FastAPI app: Device Services, console and gateway routes, dashboard",
        tables={
            "devices": RW,
            "policy_entries": RW,
            # Settings and credential changes commit versions; snapshots and deltas
            # read it and advance the committed version.
            "policy_log": RW,
            "clusters": RW,
            "gateway_nodes": R,
            # RW: revoking a credential deletes its nodes' connections, and a push to a
            # connection API Gateway reports gone forgets it.
            "connections": RW,
            "email_devices": R,
            "device_events": RW,
            "manual_overrides": R,
            # RW: MDM intake journals the devices it changes; the roster is read warm.
            "roster": RW,
            "access_history": R,
            "audit_log": Access.APPEND,
            "device_notes": RW,
            "notices": RW,
        },
        sends_to=("compliance", "payload"),
        posts_to_connections=True,  # settings/credential changes are pushed too
        signs_policy=True,  # snapshots, deltas, 304 confirmations, key sets, pushes
        timeout_s=29,  # API Gateway's integration limit
        memory_mb=1024,
    ),
    Function(
        id="compliance_reader",
        handler="lambdas.handlers.compliance_reader.handler",
        trigger=Trigger.SQS,
        consumes="compliance",
        # Re-evaluating everything (a new cluster, a policy change) fans out one page
        # at a time: the reader queues the page's evaluations and a continuation.
        sends_to=("compliance",),
        purpose="The seed's MEG Queue Reader (compliance half): evaluate, version, push",
        tables={
            "devices": RW,
            "policy_entries": RW,
            "policy_log": RW,
            "clusters": RW,
            "connections": RW,
            "manual_overrides": RW,
            "roster": W,  # journals the devices and overrides it changes
        },
        posts_to_connections=True,
        signs_policy=True,  # the pushes of each committed version
        batch_size=10,
        timeout_s=30,
    ),
    Function(
        id="payload_reader",
        handler="lambdas.handlers.payload_reader.handler",
        trigger=Trigger.SQS,
        consumes="payload",
        purpose="The seed's MEG Queue Reader (payload half): access events -> dashboard",
        tables={
            "email_devices": RW,
            "devices": R,
            "gateway_nodes": RW,
            "roster": W,  # journals the observations it folds in
            "access_history": RW,
            "notices": RW,  # per-device notice markers
        },
        sends_to=("notices",),
        batch_size=10,
        timeout_s=30,
    ),
    Function(
        id="ws_connect",
        handler="lambdas.handlers.ws_connect.handler",
        trigger=Trigger.WEBSOCKET_CONNECT,
        purpose="Authenticate a gateway node and record its connection",
        tables={"clusters": R, "connections": RW},
        timeout_s=10,
    ),
    Function(
        id="ws_disconnect",
        handler="lambdas.handlers.ws_disconnect.handler",
        trigger=Trigger.WEBSOCKET_DISCONNECT,
        purpose="Forget a closed connection",
        tables={"connections": RW},
        timeout_s=10,
    ),
    Function(
        id="ws_default",
        handler="lambdas.handlers.ws_default.handler",
        trigger=Trigger.WEBSOCKET_DEFAULT,
        purpose="Answer keepalives: re-check the credential, advance the committed version, "
        "check the node's policy digest, record each node's state",
        # clusters RW and policy_log RW: advancing the committed version fences a dead
        # writer's version and moves the watermark on the cluster item.
        tables={"clusters": RW, "policy_log": RW, "connections": RW, "gateway_nodes": RW},
        posts_to_connections=True,
        signs_policy=True,  # the pongs
        timeout_s=10,
    ),
    Function(
        id="scheduled_checkin",
        handler="lambdas.handlers.scheduled_checkin.handler",
        trigger=Trigger.SCHEDULE,
        schedule_minutes=15,
        purpose="Queue devices whose last check-in is too old for re-evaluation; seed new clusters",
        tables={"devices": R, "clusters": RW},  # RW: marks a cluster seeded
        sends_to=("compliance",),
        timeout_s=120,
        reserved_concurrency=1,  # one sweep at a time
    ),
    Function(
        id="issuer_keys",
        handler="lambdas.handlers.issuer_keys.handler",
        trigger=Trigger.SCHEDULE,
        # Identity providers announce a new signing key well ahead of using it (Entra ID:
        # days); hourly keeps every node's keys current without a fetch per token.
        schedule_minutes=60,
        purpose="Refresh Bearer token issuers' keys (JWKS) in cluster settings; push changes",
        # A changed key set is committed as a settings version (clusters, policy_log) and
        # pushed (connections RW: a gone connection is forgotten).
        tables={"clusters": RW, "policy_log": RW, "connections": RW},
        posts_to_connections=True,
        signs_policy=True,  # the push of the committed version
        timeout_s=60,
        reserved_concurrency=1,  # one refresh at a time (settings versions)
    ),
    Function(
        id="roster_compactor",
        handler="lambdas.handlers.roster_compactor.handler",
        trigger=Trigger.SCHEDULE,
        schedule_minutes=5,
        purpose="Fold the roster journal into a new snapshot (warm API functions load it)",
        # The rebuild (no snapshot yet, or a journal gap) reads every row and its join.
        tables={"roster": RW, "email_devices": R, "devices": R, "manual_overrides": R},
        timeout_s=300,
        memory_mb=1024,
        reserved_concurrency=1,  # one writer of snapshots
    ),
    Function(
        id="notice_sender",
        handler="lambdas.handlers.notice_sender.handler",
        trigger=Trigger.SQS,
        consumes="notices",
        purpose="E-mail a device's user when it became blocked or quarantined (SES)",
        tables={"notices": RW},
        sends_email=True,
        batch_size=10,
        timeout_s=30,
        reserved_concurrency=2,  # stays inside SES's sending rate
    ),
)

# Environment variables that are not a table or a queue.
ENV_WEBSOCKET_MANAGEMENT_ENDPOINT = (
    "SEG_WS_MANAGEMENT_ENDPOINT"  # https://{id}.execute-api.../{stage}
)
ENV_CONSOLE_AUTH = "SEG_CONSOLE_AUTH"  # "jwt" (API Gateway JWT authorizer) | "static"
ENV_CONSOLE_TOKEN_SHA256 = "SEG_CONSOLE_TOKEN_SHA256"  # noqa: S105 - hex sha256 of the static admin token
# The static (local) tokens of the other console roles (optional).
ENV_CONSOLE_OPERATOR_TOKEN_SHA256 = "SEG_CONSOLE_OPERATOR_TOKEN_SHA256"  # noqa: S105
ENV_CONSOLE_VIEWER_TOKEN_SHA256 = "SEG_CONSOLE_VIEWER_TOKEN_SHA256"  # noqa: S105
ENV_AUDIT_RETENTION_DAYS = "SEG_AUDIT_RETENTION_DAYS"  # the stack's log_retention_days
ENV_NOTICE_SENDER = "SEG_NOTICE_SENDER"  # SES identity notices come from ("": none sent)
ENV_DEVICE_SERVICES_KEY_SHA256 = "SEG_DEVICE_SERVICES_KEY_SHA256"  # hex sha256 of the MDM key
ENV_DEVICE_SERVICES_SECRET_ARN = "SEG_DEVICE_SERVICES_SECRET_ARN"  # noqa: S105 - Secrets Manager, in AWS
ENV_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
# The dashboard's sign-in (Cognito hosted UI) and polling, read by lambdas.api.routes_ui.
ENV_CONSOLE_OAUTH_AUTHORIZE_URL = "SEG_CONSOLE_OAUTH_AUTHORIZE_URL"
ENV_CONSOLE_OAUTH_CLIENT_ID = "SEG_CONSOLE_OAUTH_CLIENT_ID"
ENV_CONSOLE_OAUTH_SCOPES = "SEG_CONSOLE_OAUTH_SCOPES"  # space separated; default "openid email"
ENV_CONSOLE_REFRESH_SECONDS = "SEG_CONSOLE_REFRESH_SECONDS"  # dashboard polling, default 5
# The stack's policy signing keys (KMS key ARNs, comma separated; the first is the active
# one until the signing-key registry says otherwise). Set on the functions that
# ``signs_policy`` only.
ENV_POLICY_SIGNING_KEY_ARNS = "SEG_POLICY_SIGNING_KEY_ARNS"
# How long a warm function keeps the signing-key registry before reading it again
# (seconds, default 60): the longest a function signs with a key after another was
# activated. The local runtime shortens it so a rotation can be tested in seconds.
ENV_POLICY_SIGNING_REGISTRY_TTL_S = "SEG_POLICY_SIGNING_REGISTRY_TTL_S"
# Every function: the Powertools tracer never records a handler's response or exception
# as trace metadata, and the logger never logs the incoming event (responses carry issued
# credentials and device passwords, events carry bearer credentials; traces and logs are
# readable by more people than those secrets are meant for).
OBSERVABILITY_ENV = {
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    "POWERTOOLS_TRACER_CAPTURE_ERROR": "false",
    "POWERTOOLS_LOGGER_LOG_EVENT": "false",
}


def table(table_id: str) -> Table:
    return next(t for t in TABLES if t.id == table_id)


def queue(queue_id: str) -> Queue:
    return next(q for q in QUEUES if q.id == queue_id)


def function(function_id: str) -> Function:
    return next(f for f in FUNCTIONS if f.id == function_id)
