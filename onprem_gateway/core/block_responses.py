"""What the gateway answers a device it does not let through.

Clients treat the answers differently, and a wrong one costs: EAS clients run
Autodiscover again after a 401, 403 or 500 (an "Autodiscover storm" when thousands of
blocked phones retry), while from protocol 14.0 on they understand a *status inside an
HTTP 200 WBXML body* and show the user "this device is blocked". So:

======================================  ===============================================
case                                    answer
======================================  ===============================================
fail closed / no policy (rule           HTTP 503 + ``Retry-After``: the gateway cannot
``fail_closed`` / ``no_policy``)        vouch for anyone right now; the device is not
                                        blocked and must not be told it is. Any version.
protocol <= 12.1, or none sent          HTTP 403, empty body (what Exchange sends; these
                                        clients know no global status codes).
14.0+ and a command with a WBXML        HTTP 200, ``application/vnd.ms-sync.wbxml``:
response of its own                     ``<Command><Status>N</Status></Command>`` in the
                                        command's code page (MeetingResponse nests it in
                                        ``Result``, the only place its schema allows).
14.0+ and GetAttachment, legacy 2.5     HTTP 403: their responses are raw bytes or they
commands, OPTIONS                       have no WBXML shape to carry a status.
======================================  ===============================================

Status N (MS-ASCMD 2.2.2, common status codes, valid in every command's Status):
126 *UserDisabledForSync* for a per-user block (the person, not the device, is
refused); 129 *DeviceIsBlockedForThisUser* for every device-level outcome (entry, rule,
unknown device, quarantine).

Quarantine (``decision.QUARANTINE_ADMITS``): a quarantined device may Provision (so a
remote wipe or policy still reaches it), FolderSync and Settings, so the account is set
up and the device identifies itself; every command that reads, sends or watches mail
content (Sync, Ping, ItemOperations, GetAttachment, Search, SendMail, ...) gets the
blocked answer above with status 129 until the MDM or an admin releases it.
"""

from __future__ import annotations

from dataclasses import dataclass

from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.core.wbxml import CONTENT_TYPE, Element, Page, encode
from seg_contract.decision_rules import DecisionRule

STATUS_USER_DISABLED = 126  # MS-ASCMD 2.2.2 UserDisabledForSync
STATUS_DEVICE_BLOCKED = 129  # MS-ASCMD 2.2.2 DeviceIsBlockedForThisUser
# Long enough that a fleet of phones does not hammer a gateway that is waiting for its
# control plane; short enough that mail resumes within minutes of recovery.
RETRY_AFTER_S = 300
# The first protocol version whose clients understand global status codes in a body.
_FIRST_STATUS_BODY_VERSION = (14, 0)

# command -> (code page, root element, wrapper between root and Status or None)
_SHAPES: dict[str, tuple[Page, str, str | None]] = {
    "Sync": (Page.AIRSYNC, "Sync", None),
    "FolderSync": (Page.FOLDER_HIERARCHY, "FolderSync", None),
    "FolderCreate": (Page.FOLDER_HIERARCHY, "FolderCreate", None),
    "FolderDelete": (Page.FOLDER_HIERARCHY, "FolderDelete", None),
    "FolderUpdate": (Page.FOLDER_HIERARCHY, "FolderUpdate", None),
    "Ping": (Page.PING, "Ping", None),
    "Provision": (Page.PROVISION, "Provision", None),
    "ItemOperations": (Page.ITEM_OPERATIONS, "ItemOperations", None),
    "SendMail": (Page.COMPOSE_MAIL, "SendMail", None),
    "SmartReply": (Page.COMPOSE_MAIL, "SmartReply", None),
    "SmartForward": (Page.COMPOSE_MAIL, "SmartForward", None),
    "GetItemEstimate": (Page.GET_ITEM_ESTIMATE, "GetItemEstimate", None),
    "MoveItems": (Page.MOVE, "MoveItems", None),
    "Settings": (Page.SETTINGS, "Settings", None),
    "Search": (Page.SEARCH, "Search", None),
    "ResolveRecipients": (Page.RESOLVE_RECIPIENTS, "ResolveRecipients", None),
    "ValidateCert": (Page.VALIDATE_CERT, "ValidateCert", None),
    # MS-ASCMD 2.2.3.177.9: Status is a child of Result only.
    "MeetingResponse": (Page.MEETING_RESPONSE, "MeetingResponse", "Result"),
    "Find": (Page.FIND, "Find", None),
}


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """A complete answer: the data path adds Content-Length and writes it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def status_body(command: str, status: int) -> bytes | None:
    """The WBXML body carrying ``status`` in the shape of ``command``'s response, or None
    for a command without a WBXML response of its own."""
    shape = _SHAPES.get(command)
    if shape is None:
        return None
    page, root, wrapper = shape
    status_element = Element(page, "Status", text=str(status))
    inner = Element(page, wrapper, (status_element,)) if wrapper else status_element
    return encode(Element(page, root, (inner,)))


_BODIES: dict[tuple[str, int], bytes] = {
    (command, status): body
    for command in _SHAPES
    for status in (STATUS_USER_DISABLED, STATUS_DEVICE_BLOCKED)
    if (body := status_body(command, status)) is not None
}
_WBXML_HEADERS = (("Content-Type", CONTENT_TYPE), ("Cache-Control", "private"))
_FORBIDDEN = BlockResponse(403, (("Cache-Control", "private"),), b"")
_UNAVAILABLE = BlockResponse(
    503, (("Retry-After", str(RETRY_AFTER_S)), ("Cache-Control", "private")), b""
)


def speaks_status_bodies(protocol_version: str) -> bool:
    """Whether a client of this protocol version understands a global status in a 200
    WBXML body (14.0 and later). An absent or odd version is treated as old."""
    major, _, minor = protocol_version.partition(".")
    if not (major.isdecimal() and minor.isdecimal()):
        return False
    return (int(major), int(minor)) >= _FIRST_STATUS_BODY_VERSION


def blocked_response(facts: RequestFacts, decision: Decision) -> BlockResponse:
    """The answer for a request the gateway does not let through (see module docs)."""
    if decision.rule in (DecisionRule.FAIL_CLOSED, DecisionRule.NO_POLICY):
        return _UNAVAILABLE
    if not speaks_status_bodies(facts.protocol_version):
        return _FORBIDDEN
    status = (
        STATUS_USER_DISABLED if decision.rule == DecisionRule.USER_BLOCK else STATUS_DEVICE_BLOCKED
    )
    body = _BODIES.get((facts.command, status))
    if body is None:
        return _FORBIDDEN
    return BlockResponse(200, _WBXML_HEADERS, body)
