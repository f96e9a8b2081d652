"""The benches' realistic policy and the EAS requests that match it (one definition of the
device names, so that every request of the load is a device the policy allows).

A policy of N devices: user ``user<i>`` with device ``dev<i:08d>`` (an iPhone, compliant,
allowed), i in 0..N-1, unknown devices blocked (the default). The load cycles through
the devices, so the node looks every one up and reports events for all of them.

Policy is signed, as the control plane signs it (``seg_contract.signing``), with the
benches' own key ``BENCH_SIGNER`` (a fixed test key, the same in every process: the
stand-in signs with it, the node pins ``BENCH_PIN``).
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from seg_contract import (  # noqa: E402
    Access,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicySnapshot,
)
from seg_contract.signing import (  # noqa: E402
    Kind,
    LocalSigner,
    SignedPayload,
    decode_record,
    encode_record,
    issue,
)

CLUSTER_ID = "bench-cluster"
CREDENTIAL = f"segc_{CLUSTER_ID}_k1_bench"  # what the stand-in accepts (it checks nothing)
# A fixed key: benches only (never a control plane's).
BENCH_SIGNER = LocalSigner(ec.derive_private_key(0x5E6B_E7C4, ec.SECP256R1()))
BENCH_PIN = BENCH_SIGNER.public.spki_b64


def sign(kind: Kind, version: int, payload: bytes, *, since: int = 0) -> SignedPayload:
    """Signed now, for the benches' cluster, with the benches' key."""
    return issue(
        BENCH_SIGNER,
        cluster_id=CLUSTER_ID,
        kind=kind,
        version=version,
        payload=payload,
        issued_at_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        since_version=since,
    )


SYNC_BODY = b"\x03\x01j\x00\x00\x00E\\OK\x03" + b"x" * 288  # ~300 bytes, like a small Sync


def user(i: int) -> str:
    return f"user{i}"


def device(i: int) -> str:
    return f"dev{i:08d}"


def snapshot(
    devices: int, version: int = 1, *, blocked: int = 0, changed: int | None = None
) -> PolicySnapshot:
    """N allowed devices (the first ``blocked`` of them blocked instead). ``changed``: only
    the first ``changed`` entries carry ``version`` (a refresh that changed that many
    devices since version 1); the others keep version 1."""
    now = dt.datetime.now(dt.UTC)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    fresh = devices if changed is None else changed
    entries = tuple(
        DeviceEntry.model_construct(
            user=user(i),
            device_id=device(i),
            access=Access.BLOCK if i < blocked else Access.ALLOW,
            reason="compromised" if i < blocked else "compliant",
            source=EntrySource.COMPLIANCE,
            version=version if i < fresh else 1,
            updated_at=now if i < fresh else base,
            mdm_device_id=f"mdm-{i:08d}",
            device_type="iPhone",
            model="iPhone 15",
            os="iOS 18.1",
        )
        for i in range(devices)
    )
    return PolicySnapshot(
        cluster_id=CLUSTER_ID,
        version=version,
        generated_at=now,
        settings=ClusterSettings(),
        settings_version=1,
        devices=entries,
    )


def write_snapshot(
    path: Path, devices: int, version: int = 1, *, blocked: int = 0, changed: int | None = None
) -> Path:
    """A signed policy file (what ``seg-gateway fetch-policy`` writes): the node's
    ``--policy-file``, and what the stand-in serves."""
    snap = snapshot(devices, version, blocked=blocked, changed=changed)
    path.write_bytes(encode_record(sign(Kind.SNAPSHOT, version, snap.model_dump_json().encode())))
    return path


def read_snapshot(path: Path) -> bytes:
    """The snapshot JSON of a file ``write_snapshot`` made."""
    signed, _ = decode_record(path.read_bytes())
    return signed.payload


def _auth(i: int) -> str:
    return "Basic " + base64.b64encode(f"{user(i)}:device-password".encode()).decode()


def eas_path(command: str, i: int) -> str:
    return (
        f"/Microsoft-Server-ActiveSync?Cmd={command}&User={user(i)}"
        f"&DeviceId={device(i)}&DeviceType=iPhone"
    )


def request(command: str, i: int, host: str = "bench.example", body: bytes = SYNC_BODY) -> bytes:
    """One complete HTTP/1.1 keep-alive request of device ``i``."""
    head = (
        f"POST {eas_path(command, i)} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/vnd.ms-sync.wbxml\r\nMS-ASProtocolVersion: 14.1\r\n"
        f"User-Agent: Apple-iPhone15C2/2201.100\r\nAuthorization: {_auth(i)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sync_requests(devices: int) -> list[bytes]:
    return [request("Sync", i) for i in range(devices)]


def wrk_lua(devices: int, data_file: Path) -> str:
    """A wrk script that cycles through the same requests as ``sync_requests``. Python
    writes each device's path and Authorization to ``data_file`` (Lua has no base64);
    every wrk thread builds its requests once in ``init``, so ``request()`` only returns
    a prepared string."""
    data_file.write_text("".join(f"{eas_path('Sync', i)}\t{_auth(i)}\n" for i in range(devices)))
    return f"""
local reqs = {{}}
local n = 0
local body = string.rep("x", {len(SYNC_BODY)})
init = function(args)
  for line in io.lines("{data_file}") do
    local path, auth = line:match("([^\t]+)\t(.+)")
    reqs[#reqs + 1] = wrk.format("POST", path, {{
      ["Host"] = "bench.example",
      ["Content-Type"] = "application/vnd.ms-sync.wbxml",
      ["MS-ASProtocolVersion"] = "14.1",
      ["User-Agent"] = "Apple-iPhone15C2/2201.100",
      ["Authorization"] = auth,
    }}, body)
  end
  n = math.random(#reqs)
end
request = function()
  n = n % #reqs + 1
  return reqs[n]
end
"""
