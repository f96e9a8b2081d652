"""The bundled demo EAS server, driven by a real EAS 16.1 client (pyactivesync) over
HTTPS with the local CA trusted."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pyactivesync import Client, FolderType, StatusError

from seg_local.demo_mail import DEMO_PASSWORD, DemoMailServer, server_ssl_context
from seg_local.tls import make_local_tls


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoMailServer, Path]]:
    tls = make_local_tls(tmp_path_factory.mktemp("tls"))
    server = DemoMailServer(ping_hold_cap_s=1.0)
    server.start(ssl_context=server_ssl_context(tls.cert, tls.key))
    yield server, tls.ca_cert
    server.stop()


def client(
    server: DemoMailServer, ca: Path, user: str, device: str, password: str = DEMO_PASSWORD
) -> Client:
    c = Client(f"127.0.0.1:{server.port}", user, password, device_id=device, timeout=10)
    session = c._transport.session
    session.trust_env = False  # REQUESTS_CA_BUNDLE on this machine would override verify
    session.verify = str(ca)
    return c


def test_real_client_provisions_lists_folders_and_syncs(mail: tuple[DemoMailServer, Path]) -> None:
    server, ca = mail
    with client(server, ca, "alice", "DEV1") as c:
        key = c.provision()
        assert key == server.policy_keys[("alice", "dev1")]
        folders = c.list_folders()
        inbox = next(f for f in folders if f.type == FolderType.INBOX)
        first = c.sync_folder(inbox.id)
        assert first.added == [] and first.sync_key != "0"
        second = c.sync_folder(inbox.id, sync_key=first.sync_key)
        subjects = [i.fields.get("Email.Subject") for i in second.added]
        assert "Welcome to the Secure Email Gateway demo" in subjects
        third = c.sync_folder(inbox.id, sync_key=second.sync_key)
        assert third.added == []
        assert c.ping(inbox.id, heartbeat=60).status == "1"
        server.deliver("alice", "x@example.com", "new", "body")
        fourth = c.sync_folder(inbox.id, sync_key=third.sync_key)
        assert [i.fields.get("Email.Subject") for i in fourth.added] == ["new"]


def test_unprovisioned_device_gets_status_142(mail: tuple[DemoMailServer, Path]) -> None:
    server, ca = mail
    with client(server, ca, "bob", "dev2") as c:
        c._provisioned = True  # skip the dance: the server must refuse
        with pytest.raises(StatusError) as info:
            c.list_folders()
    assert info.value.code == "142"


def test_ping_heartbeat_out_of_range_is_status_5(mail: tuple[DemoMailServer, Path]) -> None:
    server, ca = mail
    with client(server, ca, "carol", "dev3") as c:
        assert c.ping("1", heartbeat=10).status == "5"


def test_wrong_password_and_options(mail: tuple[DemoMailServer, Path]) -> None:
    server, ca = mail
    url = f"https://127.0.0.1:{server.port}/Microsoft-Server-ActiveSync"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), trust_env=False) as http:
        assert http.options(url, auth=("alice", "wrong")).status_code == 401
        r = http.options(url, auth=("alice", DEMO_PASSWORD))
        assert "16.1" in r.headers["MS-ASProtocolVersions"]
        bad = http.post(url + "?Cmd=Sync", auth=("alice", DEMO_PASSWORD), content=b"")
        assert bad.status_code == 400  # no DeviceId
