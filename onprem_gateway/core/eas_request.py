"""Parse an EAS request line and headers into ``RequestFacts`` (MS-ASHTTP 2.2.1.1).

``parse(method, target, headers)`` runs on every request, so it does no regex work, no
pydantic and no allocation it can avoid; it raises exactly one exception type,
``EasRequestError``, whose ``reason`` becomes the body of an HTTP 400.

Query forms (MS-ASHTTP 2.2.1.1.1):

- *plain* (2.2.1.1.1.2): ``Cmd=Sync&User=alice&DeviceId=ABC&DeviceType=iPhone`` plus
  command parameters. Names are matched case-insensitively (IIS/ASP.NET ``QueryString``
  does, so the upstream would), and a repeated name is rejected: the upstream would join
  the two values and could see a different device than the one we decided on.
- *base64* (2.2.1.1.1.1, protocol 12.1 and later): the whole query is one base64 string
  of ``version, command code, locale (2 bytes LE), len+DeviceId, len(0|4)+PolicyKey
  (uint32 LE), len+DeviceType, then tag/len/value parameters``. A query is taken as
  base64 when it has no ``&`` and no ``=`` except trailing padding.

The query's user (``User=`` or base64 tag 8) is what the request *claims*; it lands in
``RequestFacts.user`` here, and ``core.admission`` replaces it with the user the
credentials authenticate (``core.identity``) before anything is decided: the
``Authorization`` header is not read here.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote

from onprem_gateway.core.facts import QueryForm, RequestFacts
from seg_contract import normalize_device_id, normalize_user

# --- Limits: each one bounds what a device can make us allocate or log ----------------
# IIS rejects query strings over 2048 bytes by default (requestFiltering maxQueryString);
# a real EAS query (ids, a folder id, an attachment name) is well under 512 bytes.
MAX_QUERY_BYTES = 2048
# The contract's bounds (seg_contract.models): DeviceIdStr 128, UserStr 256, ShortStr 256
# for the device type, UserAgentStr 512. An access event must always fit the contract.
MAX_DEVICE_ID = 128
MAX_USER = 256
MAX_DEVICE_TYPE = 256
MAX_USER_AGENT = 512
# "16.1"; versions are short dotted numbers (MS-ASHTTP 2.2.1.1.2.6).
MAX_VERSION_LEN = 8

# MS-ASHTTP 2.2.1.1.1.1.2 command codes (the base64 form); the plain form uses the names.
COMMAND_CODES: Mapping[int, str] = MappingProxyType(
    {
        0: "Sync",
        1: "SendMail",
        2: "SmartForward",
        3: "SmartReply",
        4: "GetAttachment",
        9: "FolderSync",
        10: "FolderCreate",
        11: "FolderDelete",
        12: "FolderUpdate",
        13: "MoveItems",
        14: "GetItemEstimate",
        15: "MeetingResponse",
        16: "Search",
        17: "Settings",
        18: "Ping",
        19: "ItemOperations",
        20: "Provision",
        21: "ResolveRecipients",
        22: "ValidateCert",
    }
)
# Plain-form command names, looked up case-insensitively. Find (MS-ASCMD 2.2.1.2, 16.1)
# has no base64 command code; legacy 2.5 commands (GetHierarchy, ...) pass through.
_COMMANDS_BY_FOLDED: Mapping[str, str] = MappingProxyType(
    {
        name.casefold(): name
        for name in (
            *COMMAND_CODES.values(),
            "Find",
            "GetHierarchy",
            "CreateCollection",
            "DeleteCollection",
            "MoveCollection",
        )
    }
)

# MS-ASHTTP 2.2.1.1.1.1.3 parameter tags. 2 (CollectionName) and 5 (ParentId) appear in
# earlier revisions of the spec and in Z-Push; they are accepted for old clients.
_PARAM_TAGS: Mapping[int, str] = MappingProxyType(
    {
        0: "AttachmentName",
        1: "CollectionId",
        2: "CollectionName",
        3: "ItemId",
        4: "LongId",
        5: "ParentId",
        6: "Occurrence",
        7: "Options",
        8: "User",
    }
)
_TAG_OPTIONS = 7
_TAG_USER = 8
# Options bitmask (MS-ASHTTP 2.2.1.1.1.1.3), reported the way the plain form spells them.
_OPTION_SAVE_IN_SENT = 0x01
_OPTION_ACCEPT_MULTIPART = 0x02

# Identity names of the plain form, case-folded.
_P_CMD = "cmd"
_P_USER = "user"
_P_DEVICE_ID = "deviceid"
_P_DEVICE_TYPE = "devicetype"

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_EMPTY: MappingProxyType[str, str] = MappingProxyType({})
_ALLOWED_METHODS = frozenset({"POST", "OPTIONS"})


class EasRequestError(ValueError):
    """A request that is not valid EAS. ``reason`` is safe to send back in a 400 body:
    it never echoes credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse(method: str, target: str, headers: Mapping[str, str]) -> RequestFacts:
    """Return the facts of one EAS request.

    ``target`` is the request target (``/Microsoft-Server-ActiveSync?...``); only the
    query is read, routing by path is the caller's job. ``headers`` must answer lower-case
    names (a dict of lower-cased names, or any case-insensitive mapping).
    """
    method = method.upper()
    if method not in _ALLOWED_METHODS:
        raise EasRequestError(f"method {method[:16]!r} is not used by Exchange ActiveSync")
    _, _, query = target.partition("?")
    if len(query) > MAX_QUERY_BYTES:
        raise EasRequestError(f"query is longer than {MAX_QUERY_BYTES} bytes")
    user_agent = _header(headers, "user-agent", MAX_USER_AGENT)

    form: QueryForm
    if not query:
        form = "none"
        command = device_id = device_type = query_user = ""
        version = _header(headers, "ms-asprotocolversion", MAX_VERSION_LEN)
        policy_key = _policy_key_header(headers)
        locale: int | None = None
        params = _EMPTY
    elif _looks_base64(query):
        form = "base64"
        (version, command, locale, device_id, policy_key, device_type, query_user, params) = (
            _parse_base64(query)
        )
    else:
        form = "plain"
        command, query_user, device_id, device_type, params = _parse_plain(query)
        version = _header(headers, "ms-asprotocolversion", MAX_VERSION_LEN)
        policy_key = _policy_key_header(headers)
        locale = None

    if version:
        _check_version(version)
    if method == "POST":
        if not command:
            raise EasRequestError("POST without a command (Cmd)")
        if not device_id:
            raise EasRequestError("POST without a DeviceId")
    raw_user = query_user
    user = normalize_user(raw_user) if raw_user else ""
    if raw_user and not user:
        raise EasRequestError("user name is empty once normalised")
    return RequestFacts(
        method=method,
        command=command,
        user=user,
        device_id=normalize_device_id(device_id) if device_id else "",
        device_type=device_type,
        protocol_version=version,
        policy_key=policy_key,
        user_agent=user_agent,
        query_form=form,
        raw_user=raw_user,
        locale=locale,
        parameters=params,
    )


# --- helpers ---------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str, limit: int) -> str:
    value = headers.get(name)
    if not value:
        return ""
    if len(value) > limit:
        raise EasRequestError(f"{name} header is longer than {limit} characters")
    # Header values may carry obs-text (RFC 9110 5.5): the data path decodes them as
    # latin-1, so only C0 controls and DEL are refused here, not every non-printable.
    if not value.isprintable() and any(c < " " or c == "\x7f" for c in value):
        raise EasRequestError(f"{name} header contains control characters")
    return value.strip()


def _policy_key_header(headers: Mapping[str, str]) -> str | None:
    value = headers.get("x-ms-policykey")
    if value is None:
        return None
    value = value.strip()
    # MS-ASPROV 2.2.2.42: a string form of a 32-bit unsigned integer.
    if not value.isdecimal() or not value.isascii() or len(value) > 10 or int(value) > 0xFFFFFFFF:
        raise EasRequestError("X-MS-PolicyKey is not a 32-bit unsigned integer")
    return value


def _check_version(version: str) -> None:
    # MS-ASHTTP 2.2.1.1.2.6: "2.5", "12.0", ... "16.1". Newer versions are accepted as
    # long as they are dotted numbers, so a future client is not refused by the gateway.
    major, dot, minor = version.partition(".")
    if not (dot and major.isdecimal() and minor.isdecimal() and version.isascii()):
        raise EasRequestError(f"protocol version {version!r} is not of the form N.N")


def _check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise EasRequestError(f"{what} is longer than {limit} characters")
    if not value.isprintable():
        raise EasRequestError(f"{what} contains control characters")
    return value


def _looks_base64(query: str) -> bool:
    # The plain form always has name=value pairs; base64 has '=' only as end padding
    # (percent-encoded as %3D by careful clients).
    if "&" in query:
        return False
    if "%" in query:
        query = unquote(query)
    return "=" not in query.rstrip("=") and "&" not in query


# Every two-character hex escape (either case) -> its byte: percent-decoding with a dict
# lookup per escape is several times faster than urllib's regex-based unquote_plus.
_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEX_PAIRS: dict[str, int] = {a + b: int(a + b, 16) for a in _HEX_DIGITS for b in _HEX_DIGITS}


def _unquote(value: str, what: str) -> str:
    """Decode a query name or value the way IIS does: '+' is a space, %XX are UTF-8
    bytes; an invalid escape is kept literally (like urllib). Non-UTF-8 is an error."""
    if "+" in value:
        value = value.replace("+", " ")
    if "%" not in value:
        return value
    head, *escaped = value.split("%")
    out = bytearray(head.encode("utf-8", "surrogatepass"))
    for chunk in escaped:
        byte = _HEX_PAIRS.get(chunk[:2])
        if byte is None:
            out += b"%"
            out += chunk.encode("utf-8", "surrogatepass")
        else:
            out.append(byte)
            out += chunk[2:].encode("utf-8", "surrogatepass")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise EasRequestError(f"{what} is not valid UTF-8") from None


def _parse_plain(
    query: str,
) -> tuple[str, str, str, str, MappingProxyType[str, str]]:
    command = user = device_id = device_type = ""
    seen: set[str] = set()
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        # Most names and values need no decoding: skip urllib for them (hot path).
        if "%" in name or "+" in name:
            name = _unquote(name, "a query parameter name")
        folded = name.casefold()
        if folded in seen:
            raise EasRequestError(f"query parameter {name[:32]!r} appears more than once")
        seen.add(folded)
        if "%" in value or "+" in value:
            value = _unquote(value, f"query parameter {name[:32]!r}")
        if folded == _P_CMD:
            canonical = _COMMANDS_BY_FOLDED.get(value.casefold())
            if canonical is None:
                raise EasRequestError(f"unknown command {value[:32]!r}")
            command = canonical
        elif folded == _P_USER:
            user = _check_text(value, "User", MAX_USER)
        elif folded == _P_DEVICE_ID:
            device_id = _check_text(value, "DeviceId", MAX_DEVICE_ID)
            if not device_id.strip():
                raise EasRequestError("DeviceId is empty")
        elif folded == _P_DEVICE_TYPE:
            device_type = _check_text(value, "DeviceType", MAX_DEVICE_TYPE).strip()
        else:
            _check_text(name, "a query parameter name", 64)
            params[name] = _check_text(value, f"query parameter {name[:32]!r}", MAX_QUERY_BYTES)
    return command, user, device_id, device_type, MappingProxyType(params) if params else _EMPTY


def _parse_base64(
    query: str,
) -> tuple[str, str, int, str, str | None, str, str, MappingProxyType[str, str]]:
    data = _b64decode(query)
    # Fixed header: version, command, locale (2 bytes LE), DeviceId length.
    if len(data) < 5:
        raise EasRequestError("base64 query is truncated (shorter than its fixed header)")
    version_byte = data[0]
    command = COMMAND_CODES.get(data[1])
    if command is None:
        raise EasRequestError(f"unknown command code {data[1]} in base64 query")
    locale = data[2] | (data[3] << 8)
    device_id_bytes, pos = _field(data, 4, "DeviceId")
    if not device_id_bytes:
        raise EasRequestError("base64 query has an empty DeviceId")
    if len(device_id_bytes) > MAX_DEVICE_ID:
        raise EasRequestError(f"DeviceId is longer than {MAX_DEVICE_ID} bytes")
    key_bytes, pos = _field(data, pos, "PolicyKey")
    if len(key_bytes) not in (0, 4):
        raise EasRequestError("base64 query PolicyKey length is neither 0 nor 4")
    policy_key = str(int.from_bytes(key_bytes, "little")) if key_bytes else None
    device_type_bytes, pos = _field(data, pos, "DeviceType")
    device_type = _decode_text(device_type_bytes, "DeviceType", MAX_DEVICE_TYPE).strip()
    user, params = _base64_params(data, pos) if pos < len(data) else ("", _EMPTY)
    return (
        f"{version_byte // 10}.{version_byte % 10}",
        command,
        locale,
        _device_id_text(device_id_bytes),
        policy_key,
        device_type,
        user,
        params,
    )


def _b64decode(query: str) -> bytes:
    text = unquote(query) if "%" in query else query
    if not _B64_ALPHABET.issuperset(text):
        raise EasRequestError("query is neither a plain EAS query nor base64")
    missing = -len(text) % 4  # some clients drop the padding
    try:
        return binascii.a2b_base64(text + "=" * missing if missing != 3 else text)
    except binascii.Error:
        raise EasRequestError("base64 query does not decode") from None


def _base64_params(data: bytes, pos: int) -> tuple[str, MappingProxyType[str, str]]:
    """The tag/length/value parameters (MS-ASHTTP 2.2.1.1.1.1.3) from ``pos`` on."""
    user = ""
    params: dict[str, str] = {}
    end = len(data)
    while pos < end:
        tag = data[pos]
        name = _PARAM_TAGS.get(tag)
        if name is None:
            raise EasRequestError(f"unknown parameter tag {tag} in base64 query")
        value_bytes, pos = _field(data, pos + 1, name)
        if name in params or (tag == _TAG_USER and user):
            raise EasRequestError(f"parameter {name} appears more than once in base64 query")
        if tag == _TAG_OPTIONS:
            if len(value_bytes) != 1:
                raise EasRequestError("base64 query Options is not one byte")
            flags = value_bytes[0]
            if flags & _OPTION_SAVE_IN_SENT:
                params["SaveInSent"] = "T"
            if flags & _OPTION_ACCEPT_MULTIPART:
                params["AcceptMultiPart"] = "T"
            params[name] = str(flags)
        elif tag == _TAG_USER:
            user = _decode_text(value_bytes, "User", MAX_USER)
            if not user:
                raise EasRequestError("base64 query has an empty User")
        else:
            params[name] = _decode_text(value_bytes, name, 255)
    return user, MappingProxyType(params) if params else _EMPTY


def _field(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """One length-prefixed field at ``pos``: its bytes and the position after it."""
    if pos >= len(data):
        raise EasRequestError(f"base64 query is truncated before the {what} length")
    length = data[pos]
    start = pos + 1
    stop = start + length
    if stop > len(data):
        raise EasRequestError(f"base64 query is truncated inside {what}")
    return data[start:stop], stop


def _decode_text(raw: bytes, what: str, limit: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EasRequestError(f"{what} is not valid UTF-8") from None
    return _check_text(text, what, limit)


def _device_id_text(raw: bytes) -> str:
    """The DeviceId of the base64 form is bytes: printable ASCII ids (the spec's example
    ``v140Device``) are kept as text; binary ids (Windows Phone sends a 16-byte GUID) are
    shown as upper-case hex, the form Exchange and Z-Push display and MDMs report."""
    if raw.isascii() and all(0x21 <= b <= 0x7E for b in raw):
        return raw.decode("ascii")
    return raw.hex().upper()
