"""A minimal WBXML encoder for the EAS answers the gateway writes itself (MS-ASWBXML).

The gateway never rewrites the mail server's WBXML; it only writes short status bodies
for blocked devices, so this module encodes a small element tree and nothing more
(no string table, no opaque data, no attributes: EAS uses none of them in these bodies).

Encoding (MS-ASWBXML 2.1.1, after WAP-192 WBXML 1.3):

- header: version ``0x03`` (WBXML 1.3), public identifier ``0x01`` (unknown/none),
  charset ``0x6A`` (MIBenum 106, UTF-8), string table length ``0x00``;
- ``SWITCH_PAGE`` (``0x00``) + page number whenever an element's code page differs from
  the current one (the document starts on page 0, AirSync);
- an element is its token, with bit ``0x40`` set when it has content, followed by its
  content and ``END`` (``0x01``);
- inline text is ``STR_I`` (``0x03``), the UTF-8 bytes, and a terminating ``0x00``.

The code page numbers and tokens below are the ones this gateway uses, each from the
MS-ASWBXML section named in its comment (2.1.2.1.x, "Code Page N: Name").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

SWITCH_PAGE = 0x00
END = 0x01
STR_I = 0x03
WITH_CONTENT = 0x40
# MS-ASWBXML 2.1.1: WBXML 1.3, public id 1 (unknown), UTF-8, empty string table.
HEADER = bytes((0x03, 0x01, 0x6A, 0x00))
CONTENT_TYPE = "application/vnd.ms-sync.wbxml"


class Page(IntEnum):
    """Code page numbers (MS-ASWBXML 2.1.2.1)."""

    AIRSYNC = 0
    MOVE = 5
    GET_ITEM_ESTIMATE = 6
    FOLDER_HIERARCHY = 7
    MEETING_RESPONSE = 8
    RESOLVE_RECIPIENTS = 10
    VALIDATE_CERT = 11
    PING = 13
    PROVISION = 14
    SEARCH = 15
    SETTINGS = 18
    ITEM_OPERATIONS = 20
    COMPOSE_MAIL = 21
    FIND = 25


# (page, tag) -> token. Only the tags used in status answers are listed.
TOKENS: dict[tuple[Page, str], int] = {
    # 2.1.2.1.1 Code Page 0: AirSync
    (Page.AIRSYNC, "Sync"): 0x05,
    (Page.AIRSYNC, "Status"): 0x0E,
    # 2.1.2.1.6 Code Page 5: Move
    (Page.MOVE, "MoveItems"): 0x05,
    (Page.MOVE, "Status"): 0x0B,
    # 2.1.2.1.7 Code Page 6: GetItemEstimate
    (Page.GET_ITEM_ESTIMATE, "GetItemEstimate"): 0x05,
    (Page.GET_ITEM_ESTIMATE, "Status"): 0x0E,
    # 2.1.2.1.8 Code Page 7: FolderHierarchy
    (Page.FOLDER_HIERARCHY, "Status"): 0x0C,
    (Page.FOLDER_HIERARCHY, "FolderCreate"): 0x13,
    (Page.FOLDER_HIERARCHY, "FolderDelete"): 0x14,
    (Page.FOLDER_HIERARCHY, "FolderUpdate"): 0x15,
    (Page.FOLDER_HIERARCHY, "FolderSync"): 0x16,
    # 2.1.2.1.9 Code Page 8: MeetingResponse
    (Page.MEETING_RESPONSE, "MeetingResponse"): 0x07,
    (Page.MEETING_RESPONSE, "Result"): 0x0A,
    (Page.MEETING_RESPONSE, "Status"): 0x0B,
    # 2.1.2.1.11 Code Page 10: ResolveRecipients
    (Page.RESOLVE_RECIPIENTS, "ResolveRecipients"): 0x05,
    (Page.RESOLVE_RECIPIENTS, "Status"): 0x07,
    # 2.1.2.1.12 Code Page 11: ValidateCert
    (Page.VALIDATE_CERT, "ValidateCert"): 0x05,
    (Page.VALIDATE_CERT, "Status"): 0x0A,
    # 2.1.2.1.14 Code Page 13: Ping
    (Page.PING, "Ping"): 0x05,
    (Page.PING, "Status"): 0x07,
    # 2.1.2.1.15 Code Page 14: Provision
    (Page.PROVISION, "Provision"): 0x05,
    (Page.PROVISION, "Status"): 0x0B,
    # 2.1.2.1.16 Code Page 15: Search
    (Page.SEARCH, "Search"): 0x05,
    (Page.SEARCH, "Status"): 0x0C,
    # 2.1.2.1.19 Code Page 18: Settings
    (Page.SETTINGS, "Settings"): 0x05,
    (Page.SETTINGS, "Status"): 0x06,
    # 2.1.2.1.21 Code Page 20: ItemOperations
    (Page.ITEM_OPERATIONS, "ItemOperations"): 0x05,
    (Page.ITEM_OPERATIONS, "Status"): 0x0D,
    # 2.1.2.1.22 Code Page 21: ComposeMail
    (Page.COMPOSE_MAIL, "SendMail"): 0x05,
    (Page.COMPOSE_MAIL, "SmartForward"): 0x06,
    (Page.COMPOSE_MAIL, "SmartReply"): 0x07,
    (Page.COMPOSE_MAIL, "Status"): 0x12,
    # 2.1.2.1.26 Code Page 25: Find (16.1)
    (Page.FIND, "Find"): 0x05,
    (Page.FIND, "Status"): 0x0A,
}


@dataclass(frozen=True, slots=True)
class Element:
    """One WBXML element: a tag on a code page, with child elements or inline text."""

    page: Page
    tag: str
    children: tuple[Element, ...] = ()
    text: str | None = None


def encode(root: Element) -> bytes:
    """The WBXML document for ``root`` (header included)."""
    out = bytearray(HEADER)
    _encode(root, out, [Page.AIRSYNC])
    return bytes(out)


def _encode(element: Element, out: bytearray, current: list[Page]) -> None:
    token = TOKENS.get((element.page, element.tag))
    if token is None:
        raise KeyError(f"no token for {element.tag!r} on code page {element.page.name}")
    if element.page != current[0]:
        out.append(SWITCH_PAGE)
        out.append(element.page)
        current[0] = element.page
    has_content = bool(element.children) or element.text is not None
    out.append(token | WITH_CONTENT if has_content else token)
    if element.text is not None:
        out.append(STR_I)
        out.extend(element.text.encode("utf-8"))
        out.append(0x00)
    for child in element.children:
        _encode(child, out, current)
    if has_content:
        out.append(END)
