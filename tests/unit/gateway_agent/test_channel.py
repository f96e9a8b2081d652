"""The agent-worker wire: access events cross as a header line and one JSON array, and
a bad body is refused whole without losing the framing of what follows."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from onprem_gateway.agent.channel import MAX_LINE, encode, encode_events, read_events, read_message
from onprem_gateway.proxy.events import build_event
from seg_contract import Access, AccessEvent


def _event(n: int) -> AccessEvent:
    return build_event(
        "node-1",
        facts=None,
        decision=Access.BLOCK if n % 2 else Access.ALLOW,
        reason=f'reason {n} \u00e9\n"quoted"',
        rule="entry",
        enforced=True,
        http_status=200,
        command="Sync",
    )


def _reader(*chunks: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_LINE)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def test_events_round_trip_exactly() -> None:
    events = [_event(n) for n in range(300)]
    reader = _reader(encode_events(events), encode({"op": "bye"}))
    header = await read_message(reader)
    assert header == {"op": "events", "body": True}
    assert await read_events(reader) == events
    assert await read_message(reader) == {"op": "bye"}


async def test_an_invalid_body_is_refused_and_the_next_message_still_reads() -> None:
    reader = _reader(
        b'{"op":"events","body":true}\n[{"event_id":"x"}]\n',
        encode({"op": "metrics", "data": {}, "version": 3}),
    )
    assert (await read_message(reader) or {})["op"] == "events"
    with pytest.raises(ValidationError):
        await read_events(reader)
    assert await read_message(reader) == {"op": "metrics", "data": {}, "version": 3}


async def test_end_of_stream_before_the_body_is_none() -> None:
    reader = _reader(b'{"op":"events","body":true}\n')
    await read_message(reader)
    assert await read_events(reader) is None
