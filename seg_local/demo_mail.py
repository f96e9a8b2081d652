"""A small Exchange ActiveSync server for demos and end-to-end tests.

Enough of EAS 14.x / 16.1 over HTTPS for real clients (MS-ASHTTP, MS-ASCMD,
MS-ASPROV), with an in-memory mailbox of a few demo messages per user:

- ``OPTIONS`` answers ``MS-ASProtocolVersions`` / ``MS-ASProtocolCommands``;
- Basic auth: any user name with the demo password (401 otherwise);
- ``Provision``: the two-step policy key dance (MS-ASPROV 3.1.5.1): the initial request
  gets a temporary key and the policy, the acknowledgement the final key; every other
  command must carry the final key in ``X-MS-PolicyKey`` or gets status 142 (14.0+,
  MS-ASCMD 2.2.2) / HTTP 449 (older);
- ``FolderSync`` returns the standard folders; ``Sync`` returns a new SyncKey on the
  initial request and the inbox's messages on the next one (MS-ASCMD 2.2.1.21);
- ``Ping`` holds for its heartbeat (60-3540 s, status 5 outside, MS-ASCMD 2.2.1.13) and
  answers status 1, or status 2 at once when ``deliver()`` puts new mail in the inbox;
- ``Settings`` and ``SendMail`` are accepted; any other command answers HTTP 501.

WBXML comes from pyactivesync's MS-ASWBXML codec; the request line from the gateway's
own EAS parser (``onprem_gateway.core.eas_request``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from pyactivesync._wbxml import CODEPAGES, Node, WBXMLReader, WBXMLWriter, find, text_of

from onprem_gateway.core.authentication import AuthorizationError, basic_credentials
from onprem_gateway.core.eas_request import EasRequestError, parse
from seg_contract import normalize_user

log = logging.getLogger(__name__)

PATH = "/Microsoft-Server-ActiveSync"
PROTOCOL_VERSIONS = "12.1,14.0,14.1,16.0,16.1"
COMMANDS = "Sync,FolderSync,Ping,Provision,Settings,SendMail,Options"
WBXML = "application/vnd.ms-sync.wbxml"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 60, 3540  # Exchange's Ping limits (MS-ASCMD 2.2.3.79.1)
DEMO_PASSWORD = "demo"  # noqa: S105 - the documented password of the demo mailboxes
INBOX = "1"
FOLDERS = (  # (ServerId, DisplayName, Type per MS-ASCMD 2.2.3.186.3)
    (INBOX, "Inbox", 2),
    ("2", "Drafts", 3),
    ("3", "Deleted Items", 4),
    ("4", "Sent Items", 5),
    ("5", "Outbox", 6),
)
# MS-ASWBXML code page 14 tokens pyactivesync's table leaves out (policy settings).
_PROVISION_EXTRA = {"DevicePasswordEnabled": 0x0E, "AlphanumericDevicePasswordRequired": 0x0F}

NodeBuilder = Callable[[WBXMLWriter], None]


def tag(page: str, name: str, *children: NodeBuilder, text: str | None = None) -> NodeBuilder:
    def build(writer: WBXMLWriter) -> None:
        if page == "Provision" and name in _PROVISION_EXTRA:
            writer._switch(page)  # same codec, extra tokens
            token = _PROVISION_EXTRA[name]
            writer.body.append(token | 0x40)
            writer.body.append(0x03)
            writer.body.extend((text or "").encode() + b"\x00")
            writer.body.append(0x01)
            return
        writer.tag(page, name, list(children) or None, text)

    return build


def render(root: NodeBuilder) -> bytes:
    writer = WBXMLWriter()
    root(writer)
    return writer.render()


@dataclass
class Message:
    server_id: str
    sender: str
    subject: str
    body: str
    received: datetime


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    new_mail: asyncio.Event | None = None


def demo_messages(user: str) -> list[Message]:
    now = datetime.now(UTC)
    items = (
        (
            "it@example.com",
            "Welcome to the Secure Email Gateway demo",
            "Your device syncs through the gateway only while the MDM says it is compliant.",
        ),
        ("mdm@example.com", "Device enrolled", f"{user}, your device is enrolled."),
        ("boss@example.com", "Quarterly numbers", "See the attached spreadsheet (not really)."),
    )
    return [
        Message(f"{INBOX}:{i + 1}", s, subj, body, now) for i, (s, subj, body) in enumerate(items)
    ]


class DemoMailServer:
    """The aiohttp app and its state. ``start()`` serves it on a thread of its own."""

    def __init__(
        self,
        *,
        password: str = DEMO_PASSWORD,
        require_provisioning: bool = True,
        ping_hold_cap_s: float | None = None,
    ) -> None:
        self.password = password
        self.require_provisioning = require_provisioning
        self.ping_hold_cap_s = ping_hold_cap_s  # tests: answer Pings sooner
        self.mailboxes: dict[str, Mailbox] = {}
        self.policy_keys: dict[tuple[str, str], str] = {}  # (user, device) -> final key
        self._temp_keys: dict[tuple[str, str], str] = {}
        # The last requests seen, (user, device_id, command): bounded for long runs.
        self.requests: deque[tuple[str, str, str]] = deque(maxlen=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_route("OPTIONS", PATH, self._options)
        self.app.router.add_route("POST", PATH, self._post)

    # --- state ----------------------------------------------------------------------

    def mailbox(self, user: str) -> Mailbox:
        box = self.mailboxes.get(user)
        if box is None:
            box = self.mailboxes[user] = Mailbox(demo_messages(user))
        return box

    def deliver(self, user: str, sender: str, subject: str, body: str) -> None:
        """Put a new message in ``user``'s inbox (thread-safe); a held Ping answers 2."""

        def put() -> None:
            box = self.mailbox(user)
            box.messages.append(
                Message(
                    f"{INBOX}:{len(box.messages) + 1}", sender, subject, body, datetime.now(UTC)
                )
            )
            if box.new_mail is not None:
                box.new_mail.set()

        if self._loop is not None:
            self._loop.call_soon_threadsafe(put)
        else:
            put()

    # --- HTTP -----------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> str | None:
        try:
            creds = basic_credentials(request.headers.get("Authorization"))
        except AuthorizationError:
            return None
        if creds is None or not secrets.compare_digest(creds[1], self.password):
            return None
        return creds[0]

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="SEG demo mail"'})

    async def _options(self, request: web.Request) -> web.Response:
        if self._authenticate(request) is None:
            return self._unauthorized()
        return web.Response(
            status=200,
            headers={
                "MS-Server-ActiveSync": "15.1",
                "MS-ASProtocolVersions": PROTOCOL_VERSIONS,
                "MS-ASProtocolCommands": COMMANDS,
                "Allow": "OPTIONS,POST",
            },
        )

    async def _post(self, request: web.Request) -> web.StreamResponse:
        account = self._authenticate(request)
        if account is None:
            return self._unauthorized()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            facts = parse("POST", request.path_qs, headers)
        except EasRequestError as exc:
            return web.Response(status=400, text=exc.reason)
        body = await request.read()
        try:
            nodes = WBXMLReader(body).parse() if body else []
        except (IndexError, ValueError):
            return web.Response(status=400, text="request body is not WBXML")
        # The mailbox is the authenticated account's, whatever the query's User= says
        # (what Exchange does).
        user, device = normalize_user(account), facts.device_id
        self.requests.append((user, device, facts.command))
        version = facts.protocol_version or "14.1"
        if facts.command == "Provision":
            return self._wbxml(self._provision(user, device, nodes))
        if self.require_provisioning and facts.command in _STATUS_ELEMENT:
            key = self.policy_keys.get((user, device))
            if key is None or facts.policy_key != key:
                return self._not_provisioned(facts.command, version)
        return await self._command(facts.command, user, nodes)

    def _not_provisioned(self, command: str, version: str) -> web.Response:
        if float(version) < 14.0:
            return web.Response(status=449)  # MS-ASHTTP 3.2.5.1: Provision needed
        page, root = _STATUS_ELEMENT[command]
        # MS-ASCMD 2.2.2: 142 DeviceNotProvisioned
        return self._wbxml(render(tag(page, root, tag(page, "Status", text="142"))))

    async def _command(self, command: str, user: str, nodes: list[Node]) -> web.Response:
        if command == "FolderSync":
            data = self._folder_sync(nodes)
        elif command == "Sync":
            data = self._sync(user, nodes)
        elif command == "Ping":
            data = await self._ping(user, nodes)
        elif command == "Settings":
            data = render(tag("Settings", "Settings", tag("Settings", "Status", text="1")))
        elif command == "SendMail":
            return web.Response(status=200)
        else:
            return web.Response(status=501, text=f"{command} is not implemented by the demo")
        return self._wbxml(data)

    @staticmethod
    def _wbxml(data: bytes) -> web.Response:
        return web.Response(status=200, body=data, content_type=WBXML)

    # --- commands -------------------------------------------------------------------

    def _provision(self, user: str, device: str, nodes: list[Node]) -> bytes:
        acked_key = text_of(find(nodes, "Provision.PolicyKey"))
        policy: list[NodeBuilder] = [tag("Provision", "PolicyType", text=POLICY_TYPE)]
        if acked_key and acked_key == self._temp_keys.get((user, device)):
            final = str(secrets.randbelow(2**31 - 2) + 1)
            self.policy_keys[(user, device)] = final
            del self._temp_keys[(user, device)]
            policy += [
                tag("Provision", "Status", text="1"),
                tag("Provision", "PolicyKey", text=final),
            ]
        else:
            temp = str(secrets.randbelow(2**31 - 2) + 1)
            self._temp_keys[(user, device)] = temp
            policy += [
                tag("Provision", "Status", text="1"),
                tag("Provision", "PolicyKey", text=temp),
                tag(
                    "Provision",
                    "Data",
                    tag(
                        "Provision",
                        "EASProvisionDoc",
                        tag("Provision", "DevicePasswordEnabled", text="0"),
                        tag("Provision", "AlphanumericDevicePasswordRequired", text="0"),
                    ),
                ),
            ]
        children: list[NodeBuilder] = []
        if find(nodes, "Settings.DeviceInformation") is not None:
            children.append(
                tag("Settings", "DeviceInformation", tag("Settings", "Status", text="1"))
            )
        children += [
            tag("Provision", "Status", text="1"),
            tag("Provision", "Policies", tag("Provision", "Policy", *policy)),
        ]
        return render(tag("Provision", "Provision", *children))

    @staticmethod
    def _folder_sync(nodes: list[Node]) -> bytes:
        key = text_of(find(nodes, "FolderHierarchy.SyncKey")) or "0"
        adds = (
            [
                tag(
                    "FolderHierarchy",
                    "Add",
                    tag("FolderHierarchy", "ServerId", text=sid),
                    tag("FolderHierarchy", "ParentId", text="0"),
                    tag("FolderHierarchy", "DisplayName", text=name),
                    tag("FolderHierarchy", "Type", text=str(kind)),
                )
                for sid, name, kind in FOLDERS
            ]
            if key == "0"
            else []
        )
        return render(
            tag(
                "FolderHierarchy",
                "FolderSync",
                tag("FolderHierarchy", "Status", text="1"),
                tag("FolderHierarchy", "SyncKey", text="1"),
                tag(
                    "FolderHierarchy",
                    "Changes",
                    tag("FolderHierarchy", "Count", text=str(len(adds))),
                    *adds,
                ),
            )
        )

    def _sync(self, user: str, nodes: list[Node]) -> bytes:
        collection = find(nodes, "AirSync.Collection")
        children = collection[2] if collection else []
        key = text_of(find(children, "AirSync.SyncKey")) or "0"
        folder = text_of(find(children, "AirSync.CollectionId")) or INBOX
        if folder not in {f[0] for f in FOLDERS}:
            status = "8"  # MS-ASCMD 2.2.3.177.17: object not found
            return render(tag("AirSync", "Sync", tag("AirSync", "Status", text=status)))
        if not key.isdigit():
            return render(tag("AirSync", "Sync", tag("AirSync", "Status", text="3")))
        new_key = str(int(key) + 1)
        commands: list[NodeBuilder] = []
        if key != "0" and folder == INBOX:
            # Each message is sent once: key N carries the messages after the first N-1.
            start = int(key) - 1
            pending = self.mailbox(user).messages[start:]
            commands = [self._add(m, user) for m in pending]
            new_key = str(int(key) + len(pending)) if pending else key
        parts: list[NodeBuilder] = [
            tag("AirSync", "SyncKey", text=new_key),
            tag("AirSync", "CollectionId", text=folder),
            tag("AirSync", "Status", text="1"),
        ]
        if commands:
            parts.append(tag("AirSync", "Commands", *commands))
        return render(
            tag(
                "AirSync",
                "Sync",
                tag("AirSync", "Collections", tag("AirSync", "Collection", *parts)),
            )
        )

    @staticmethod
    def _add(message: Message, user: str) -> NodeBuilder:
        return tag(
            "AirSync",
            "Add",
            tag("AirSync", "ServerId", text=message.server_id),
            tag(
                "AirSync",
                "ApplicationData",
                tag("Email", "To", text=f"{user}@example.com"),
                tag("Email", "From", text=message.sender),
                tag("Email", "Subject", text=message.subject),
                tag(
                    "Email",
                    "DateReceived",
                    text=message.received.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                ),
                tag("Email", "Read", text="0"),
                tag("Email", "MessageClass", text="IPM.Note"),
                tag(
                    "AirSyncBase",
                    "Body",
                    tag("AirSyncBase", "Type", text="1"),
                    tag("AirSyncBase", "EstimatedDataSize", text=str(len(message.body))),
                    tag("AirSyncBase", "Data", text=message.body),
                ),
            ),
        )

    async def _ping(self, user: str, nodes: list[Node]) -> bytes:
        raw = text_of(find(nodes, "Ping.HeartbeatInterval")) or str(MIN_HEARTBEAT_S * 8)
        heartbeat = int(raw) if raw.isdigit() else 0
        if not MIN_HEARTBEAT_S <= heartbeat <= MAX_HEARTBEAT_S:
            limit = MIN_HEARTBEAT_S if heartbeat < MIN_HEARTBEAT_S else MAX_HEARTBEAT_S
            return render(
                tag(
                    "Ping",
                    "Ping",
                    tag("Ping", "Status", text="5"),
                    tag("Ping", "HeartbeatInterval", text=str(limit)),
                )
            )
        box = self.mailbox(user)
        box.new_mail = box.new_mail or asyncio.Event()
        box.new_mail.clear()
        hold = heartbeat if self.ping_hold_cap_s is None else min(heartbeat, self.ping_hold_cap_s)
        try:
            await asyncio.wait_for(box.new_mail.wait(), hold)
        except TimeoutError:
            return render(tag("Ping", "Ping", tag("Ping", "Status", text="1")))
        return render(
            tag(
                "Ping",
                "Ping",
                tag("Ping", "Status", text="2"),
                tag("Ping", "Folders", tag("Ping", "Folder", text=INBOX)),
            )
        )

    # --- serving --------------------------------------------------------------------

    def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Serve on a background thread; returns the bound port."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self.app, access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
                loop.run_until_complete(site.start())
                server = site._server  # the bound port with port 0
                assert server is not None and server.sockets  # type: ignore[attr-defined]
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="demo-mail", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None


_STATUS_ELEMENT = {  # command -> (code page, top element) for a status-only answer
    "Sync": ("AirSync", "Sync"),
    "FolderSync": ("FolderHierarchy", "FolderSync"),
    "Ping": ("Ping", "Ping"),
    "Settings": ("Settings", "Settings"),
}
assert all(root in CODEPAGES[page] for page, root in _STATUS_ELEMENT.values())


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main(argv: list[str] | None = None) -> int:
    """``python -m seg_local.demo_mail``: serve the demo mail server in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m seg_local.demo_mail")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", type=Path, help="PEM chain (default: plain HTTP)")
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        print("demo_mail: --cert and --key go together", file=sys.stderr)
        return 2
    server = DemoMailServer()
    context = server_ssl_context(args.cert, args.key) if args.cert else None
    port = server.start(args.host, args.port, context)
    print(json.dumps({"url": f"{'https' if context else 'http'}://{args.host}:{port}"}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
