"""The local control plane: the ``lambdas`` handlers wired to moto, uvicorn, SQS pollers,
the WebSocket API stand-in and the schedule, all from ``lambdas.resources``.

One per process: the handlers read their settings from ``os.environ`` (as on Lambda),
so ``start()`` sets the environment they read and a second instance in the same process
is refused. Run it in a process of its own with ``python -m seg_local serve``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from lambdas import resources
from seg_local.aws_events import REGION
from seg_local.provision import Provisioned, provision
from seg_local.schedule import ScheduleTimer
from seg_local.servers import ServerThread, bind
from seg_local.signing_key import SigningKey, provision_signing_key
from seg_local.sqs_poller import SqsPoller
from seg_local.ttl_sweeper import TtlSweeper
from seg_local.websocket_api import Limits, Routes, WebSocketApiStandIn

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
WS_STAGE = "local"

# Fake credentials: moto accepts anything, and nothing here may ever reach AWS.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "seg-local",
    "AWS_SECRET_ACCESS_KEY": "seg-local",
    "AWS_SESSION_TOKEN": "seg-local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# powertools on a laptop: no X-Ray daemon, no CloudWatch metrics sink.
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "seg-control-plane",
    "POWERTOOLS_METRICS_NAMESPACE": "SEG",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


LOCAL_NOTICE_SENDER = "seg-notices@seg.example"


class ControlPlaneError(RuntimeError):
    """The local control plane cannot start (the message says why)."""


_started_in_process = threading.Lock()


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    api_port: int = 0
    ws_port: int = 0
    moto_endpoint: str = ""  # "": run moto in this process
    prefix: str = "seg-local"
    admin_token: str = ""  # "": generate one
    operator_token: str = ""  # "": generate one
    viewer_token: str = ""  # "": generate one
    device_services_key: str = ""  # "": generate one
    # Notices to users go out through moto's SES from this address; the messages moto
    # holds are copied to ``mailbox_dir`` when given (with moto in this process).
    notice_sender: str = LOCAL_NOTICE_SENDER
    mailbox_dir: str = ""
    schedule_interval_s: float | None = None  # None: each function's schedule_minutes
    visibility_timeout_s: Mapping[str, int] = field(default_factory=dict)  # queue id -> s
    ws_limits: Limits = field(default_factory=Limits)
    poll_wait_s: int = 1
    ttl_sweep_interval_s: float = 60.0  # DynamoDB deletes expired items within days
    log_level: str = "WARNING"  # the handlers' POWERTOOLS_LOG_LEVEL
    # HTTPS + WSS on the API and the WebSocket endpoint (API Gateway is TLS-only);
    # ``ca_bundle`` lets the handlers' boto3 trust the @connections endpoint.
    tls_cert: str = ""
    tls_key: str = ""
    ca_bundle: str = ""
    # Policy signing keys in moto's KMS (2: a stack during a rotation; nodes pin the
    # first), and how long the handlers keep the key registry (None: as in AWS, 60 s).
    signing_keys: int = 1
    signing_registry_ttl_s: float | None = None
    # Tests of the runtime pieces: function id -> handler, and an API app to serve.
    handler_overrides: Mapping[str, Handler] = field(default_factory=dict)
    api_app: Any = None


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    ws_url: str
    management_endpoint: str
    moto_endpoint: str
    admin_token: str = field(repr=False)
    device_services_key: str = field(repr=False)
    operator_token: str = field(default="", repr=False)
    viewer_token: str = field(default="", repr=False)
    # The public keys gateway nodes pin (base64 DER SubjectPublicKeyInfo): not secret.
    policy_signing_keys: tuple[str, ...] = ()
    # Every signing key's ARN in moto's KMS (the first is the one nodes pin).
    policy_signing_key_arns: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """Everything but the secrets (for logs and ready files)."""
        return {
            "api_url": self.api_url,
            "ws_url": self.ws_url,
            "management_endpoint": self.management_endpoint,
            "moto_endpoint": self.moto_endpoint,
            "policy_signing_keys": list(self.policy_signing_keys),
            "policy_signing_key_arns": list(self.policy_signing_key_arns),
        }


def verify_sender(sesv2: Any, sender: str) -> None:
    """Make ``sender`` a verified SES identity (moto refuses to send from others)."""
    try:
        sesv2.create_email_identity(EmailIdentity=sender)
    except sesv2.exceptions.AlreadyExistsException:
        pass


def import_handler(dotted: str) -> Handler:
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ControlPlaneError(f"cannot import handler {dotted}: {exc}") from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ControlPlaneError(f"{dotted} is not a callable handler")
    return handler  # type: ignore[no-any-return]


def _clear_settings_cache() -> None:
    from lambdas.settings import load_settings  # noqa: PLC0415

    load_settings.cache_clear()


def default_api_app() -> Any:
    """The same FastAPI app Mangum serves on Lambda."""
    try:
        from lambdas.api.app import create_app  # noqa: PLC0415 - after the env is set
    except ImportError as exc:
        raise ControlPlaneError(f"cannot import lambdas.api.app.create_app: {exc}") from exc
    return create_app()


class LocalControlPlane:
    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self._moto: Any = None
        self.mailbox: Any = None
        self._servers: ServerThread | None = None
        self.websocket_api: WebSocketApiStandIn | None = None
        self.pollers: dict[str, SqsPoller] = {}
        self.timers: dict[str, ScheduleTimer] = {}
        self.ttl_sweeper: TtlSweeper | None = None
        self.provisioned: Provisioned | None = None
        self.signing_key: SigningKey | None = None  # the first: what nodes pin
        self.signing_keys: list[SigningKey] = []
        self.endpoints: Endpoints | None = None
        self.env: dict[str, str] = {}
        self._owns_process = False
        self._saved_env: dict[str, str | None] = {}
        self._handler_map: dict[str, tuple[str, Handler]] = {}

    # --- start ----------------------------------------------------------------------

    def start(self) -> Endpoints:
        if not _started_in_process.acquire(blocking=False):
            raise ControlPlaneError(
                "a local control plane already runs in this process (the handlers read "
                "one environment); run another with `python -m seg_local serve`"
            )
        self._owns_process = True
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start_moto(self) -> str:
        if self.options.moto_endpoint:
            return self.options.moto_endpoint.rstrip("/")
        from seg_local.moto_server import LocalMotoServer  # noqa: PLC0415 - only when embedded

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
        self._moto = LocalMotoServer(self.options.host)
        return self._moto.start()

    def _start_mail(self, sesv2: Any) -> None:
        """SES for the notices to users: the sender verified in moto, and (with moto in
        this process) the sent mail copied to the mailbox directory."""
        opts = self.options
        if opts.notice_sender:
            try:
                verify_sender(sesv2, opts.notice_sender)
            except Exception as exc:
                raise ControlPlaneError(f"cannot verify the notice sender in moto: {exc}") from exc
        if opts.mailbox_dir and self._moto is not None:
            from seg_local.mailbox import Mailbox  # noqa: PLC0415 - moto in this process only

            self.mailbox = Mailbox(Path(opts.mailbox_dir))
            self.mailbox.start()

    def _start(self) -> Endpoints:
        opts = self.options
        api_sock = bind(opts.host, opts.api_port)  # first: a taken port fails fast
        ws_sock = bind(opts.host, opts.ws_port)
        moto_endpoint = self._start_moto()
        api_port, ws_port = api_sock.getsockname()[1], ws_sock.getsockname()[1]
        admin_token = opts.admin_token or new_secret("segadmin")
        operator_token = opts.operator_token or new_secret("segoperator")
        viewer_token = opts.viewer_token or new_secret("segviewer")
        ds_key = opts.device_services_key or new_secret("segds")
        if bool(opts.tls_cert) != bool(opts.tls_key):
            raise ControlPlaneError("TLS needs both a certificate and a key")
        tls = bool(opts.tls_cert)
        http, ws = ("https", "wss") if tls else ("http", "ws")
        management = f"{http}://{opts.host}:{ws_port}/{WS_STAGE}"

        session = boto3.session.Session(
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        dynamodb = session.client("dynamodb", endpoint_url=moto_endpoint)
        sqs = session.client("sqs", endpoint_url=moto_endpoint)
        try:
            self.provisioned = provision(dynamodb, sqs, opts.prefix, opts.visibility_timeout_s)
        except Exception as exc:
            raise ControlPlaneError(f"cannot create tables and queues in moto: {exc}") from exc
        self._start_mail(session.client("sesv2", endpoint_url=moto_endpoint))
        self.signing_key = self._provision_signing_keys(
            session.client("kms", endpoint_url=moto_endpoint)
        )

        self.env = {
            **FAKE_AWS_ENV,
            **POWERTOOLS_ENV,
            **resources.OBSERVABILITY_ENV,  # as in AWS: no secrets in traces or logs
            "POWERTOOLS_LOG_LEVEL": opts.log_level,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": management,
            **self.provisioned.env(),
            resources.ENV_POLICY_SIGNING_KEY_ARNS: ",".join(k.arn for k in self.signing_keys),
            resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT: management,
            resources.ENV_CONSOLE_AUTH: "static",
            resources.ENV_CONSOLE_TOKEN_SHA256: sha256_hex(admin_token),
            resources.ENV_CONSOLE_OPERATOR_TOKEN_SHA256: sha256_hex(operator_token),
            resources.ENV_CONSOLE_VIEWER_TOKEN_SHA256: sha256_hex(viewer_token),
            resources.ENV_DEVICE_SERVICES_KEY_SHA256: sha256_hex(ds_key),
            resources.ENV_NOTICE_SENDER: opts.notice_sender,
        }
        if opts.signing_registry_ttl_s is not None:
            self.env[resources.ENV_POLICY_SIGNING_REGISTRY_TTL_S] = str(opts.signing_registry_ttl_s)
        removed = ("AWS_PROFILE", resources.ENV_DEVICE_SERVICES_SECRET_ARN)
        self._saved_env = {k: os.environ.get(k) for k in (*self.env, *removed)}
        if opts.ca_bundle:
            self.env["AWS_CA_BUNDLE"] = opts.ca_bundle  # boto3 -> https @connections
            self._saved_env["AWS_CA_BUNDLE"] = os.environ.get("AWS_CA_BUNDLE")
        os.environ.update(self.env)
        for name in removed:
            os.environ.pop(name, None)
        _clear_settings_cache()

        self._handler_map = handlers = self._handlers()
        api_app = opts.api_app if opts.api_app is not None else default_api_app()
        self.websocket_api = WebSocketApiStandIn(
            Routes(
                connect=handlers[resources.Trigger.WEBSOCKET_CONNECT][1],
                disconnect=handlers[resources.Trigger.WEBSOCKET_DISCONNECT][1],
                default=handlers[resources.Trigger.WEBSOCKET_DEFAULT][1],
                connect_name=handlers[resources.Trigger.WEBSOCKET_CONNECT][0],
                disconnect_name=handlers[resources.Trigger.WEBSOCKET_DISCONNECT][0],
                default_name=handlers[resources.Trigger.WEBSOCKET_DEFAULT][0],
            ),
            stage=WS_STAGE,
            limits=opts.ws_limits,
        )
        self.websocket_api.domain_name = f"{opts.host}:{ws_port}"
        self._servers = ServerThread()
        cert, key = opts.tls_cert or None, opts.tls_key or None
        self._servers.add("api", api_app, api_sock, ssl_certfile=cert, ssl_keyfile=key)
        # uvicorn's own frame limit sits above API Gateway's 128 KB message limit, so the
        # stand-in sees an oversize message and closes with 1009 as API Gateway does.
        self._servers.add(
            "ws",
            self.websocket_api.app,
            ws_sock,
            ws_max_size=4 * opts.ws_limits.max_message_bytes,
            ssl_certfile=cert,
            ssl_keyfile=key,
        )
        self._servers.start()
        self._start_consumers(sqs)
        self.ttl_sweeper = TtlSweeper(
            dynamodb, self.provisioned.tables, self.options.ttl_sweep_interval_s
        )
        self.ttl_sweeper.start()
        self.endpoints = Endpoints(
            api_url=f"{http}://{opts.host}:{api_port}",
            ws_url=f"{ws}://{opts.host}:{ws_port}/{WS_STAGE}",
            management_endpoint=management,
            moto_endpoint=moto_endpoint,
            admin_token=admin_token,
            device_services_key=ds_key,
            operator_token=operator_token,
            viewer_token=viewer_token,
            policy_signing_keys=(self.signing_key.public_key,),
            policy_signing_key_arns=tuple(k.arn for k in self.signing_keys),
        )
        log.info("local control plane up: %s", self.endpoints.public())
        return self.endpoints

    def _provision_signing_keys(self, kms: Any) -> SigningKey:
        """The policy signing keys in moto's KMS; returns the first (the one nodes pin)."""
        count = self.options.signing_keys
        if not 1 <= count <= 4:
            raise ControlPlaneError("a local runtime has 1 to 4 policy signing keys")
        try:
            self.signing_keys = [
                provision_signing_key(kms, self.options.prefix, n) for n in range(1, count + 1)
            ]
        except Exception as exc:
            raise ControlPlaneError(f"cannot create the policy signing key in moto: {exc}") from exc
        return self.signing_keys[0]

    def _handlers(self) -> dict[str, tuple[str, Handler]]:
        """Trigger (WebSocket routes) or function id -> (function id, handler), for every
        function but the HTTP API (which uvicorn serves as the FastAPI app itself)."""
        out: dict[str, tuple[str, Handler]] = {}
        for function in resources.FUNCTIONS:
            if function.trigger is resources.Trigger.HTTP_API:
                continue
            handler = self.options.handler_overrides.get(function.id) or import_handler(
                function.handler
            )
            key = function.trigger.value if function.trigger.value.startswith("$") else function.id
            out[key] = (function.id, handler)
        return out

    def _start_consumers(self, sqs: Any) -> None:
        assert self.provisioned is not None
        handlers = self._handler_map
        for function in resources.FUNCTIONS:
            if function.trigger is resources.Trigger.SQS:
                if function.consumes is None:
                    raise ControlPlaneError(
                        f"function {function.id} has an SQS trigger but no queue"
                    )
                queue = resources.queue(function.consumes)
                poller = SqsPoller(
                    name=function.id,
                    sqs=sqs,
                    queue_url=self.provisioned.queues[queue.id],
                    queue_arn=self.provisioned.queue_arns[queue.id],
                    handler=handlers[function.id][1],
                    batch_size=function.batch_size,
                    timeout_s=function.timeout_s,
                    memory_mb=function.memory_mb,
                    wait_time_s=self.options.poll_wait_s,
                    visibility_timeout_s=self.options.visibility_timeout_s.get(
                        queue.id, queue.visibility_timeout_s
                    ),
                )
                poller.start()
                self.pollers[function.id] = poller
            elif function.trigger is resources.Trigger.SCHEDULE:
                interval = self.options.schedule_interval_s or (
                    (function.schedule_minutes or 60) * 60.0
                )
                timer = ScheduleTimer(
                    name=function.id,
                    handler=handlers[function.id][1],
                    interval_s=interval,
                    timeout_s=function.timeout_s,
                )
                timer.start()
                self.timers[function.id] = timer

    # --- stop -----------------------------------------------------------------------

    def _stop_moto(self) -> None:
        if self.mailbox is not None:
            self.mailbox.stop()  # copies what moto still holds first
            self.mailbox = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def stop(self) -> None:
        """Close WebSockets (``$disconnect`` runs for each), stop the servers, the
        pollers, the schedule and moto; safe to call twice."""
        if self._servers is not None and self.websocket_api is not None:
            ws = self.websocket_api
            try:
                self._servers.call(lambda: ws.close_all(1001, "Going away"), timeout=10)
            except Exception:
                log.exception("closing WebSocket connections failed")
        for poller in self.pollers.values():
            poller.request_stop()  # all at once: each may sit in a long poll
        if self.ttl_sweeper is not None:
            self.ttl_sweeper.stop()
        for timer in self.timers.values():
            timer.stop()
        for poller in self.pollers.values():
            poller.stop()
        if self._servers is not None:
            self._servers.stop()
            self._servers = None
        self._stop_moto()
        # Give the process its environment back (tests run other tiers after this one).
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        _clear_settings_cache()
        if self._owns_process:
            self._owns_process = False
            _started_in_process.release()
