"""Large frame payloads are received into memory of their own and unmasked in place (coordinator.server.payloads)."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.streams import StreamReader

from coordinator.server.payloads import (
    OWN_ABOVE_BYTES,
    POPULATE_BYTES,
    SPARES,
    Payload,
    PayloadReader,
    Spares,
    take_payloads,
    unmask_in_place,
)


def _server() -> tuple[Protocol, PayloadReader]:
    protocol = Protocol(Side.SERVER, state=State.OPEN, max_size=None)  # past the handshake: frames
    return protocol, take_payloads(protocol.reader)


def _masked(payload: bytes, opcode: Opcode = Opcode.BINARY) -> bytes:
    return Frame(opcode, payload).serialize(mask=True, extensions=[])


def _feed(protocol: Protocol, data: bytes, cuts: list[int]) -> list[Frame]:
    frames: list[Frame] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if cut > start:
            protocol.receive_data(data[start:cut])
            frames.extend(e for e in protocol.events_received() if isinstance(e, Frame))
            start = cut
    return frames


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(OWN_ABOVE_BYTES, OWN_ABOVE_BYTES + 4099),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
    small=st.binary(min_size=1, max_size=100),
)
def test_a_large_payload_arrives_whole_in_a_payload_of_its_own_however_it_is_split(
    size: int, cuts: list[int], small: bytes
) -> None:
    protocol, reader = _server()
    big = os.urandom(size)
    frames = _feed(protocol, _masked(small) + _masked(big) + _masked(small), cuts)
    assert [bytes(f.data) for f in frames] == [small, big, small]
    assert isinstance(frames[1].data, Payload) and len(frames[1].data) == size
    assert not isinstance(frames[0].data, Payload)  # small frames take websockets' own path
    assert reader.pending == 0


def test_pending_counts_what_arrived_of_a_payload_under_way() -> None:
    protocol, reader = _server()
    frame = _masked(os.urandom(3 * OWN_ABOVE_BYTES))
    protocol.receive_data(frame[:1000])
    assert reader.pending == 1000 - 14  # a 64-bit length and a mask: 14 bytes of header
    protocol.receive_data(frame[1000:-1])
    assert reader.pending == len(frame) - 1 - 14
    protocol.receive_data(frame[-1:])
    assert [len(e.data) for e in protocol.events_received() if isinstance(e, Frame)] == [3 * OWN_ABOVE_BYTES]
    assert reader.pending == 0


def test_a_budget_is_charged_what_arrived_and_a_bounded_part_of_what_was_announced() -> None:
    # Counting a frame whole from its header would let a client trickling a large one hold that much of the
    # coordinator's budget; counting only what arrived let a thousand uploads start at once.
    protocol, reader = _server()
    frame = _masked(os.urandom(4 * OWN_ABOVE_BYTES))
    protocol.receive_data(frame[:1000])
    assert reader.counted(OWN_ABOVE_BYTES) == 1000 - 14 + OWN_ABOVE_BYTES
    assert reader.counted(10 * OWN_ABOVE_BYTES) == reader.expected == 4 * OWN_ABOVE_BYTES
    protocol.receive_data(frame[1000:-100])
    assert reader.counted(OWN_ABOVE_BYTES) == reader.expected == 4 * OWN_ABOVE_BYTES
    protocol.receive_data(frame[-100:])
    assert reader.counted(OWN_ABOVE_BYTES) == 0


def test_a_stream_that_ends_mid_payload_is_an_error_not_a_short_frame() -> None:
    protocol, _ = _server()
    protocol.receive_data(_masked(os.urandom(2 * OWN_ABOVE_BYTES))[:-10])
    protocol.receive_eof()
    assert not [e for e in protocol.events_received() if isinstance(e, Frame) and e.opcode is Opcode.BINARY]
    assert isinstance(protocol.parser_exc, EOFError)


@given(data=st.binary(max_size=64), mask=st.binary(min_size=4, max_size=4))
def test_unmasking_in_place_matches_the_rfc(data: bytes, mask: bytes) -> None:
    buffer = bytearray(data)
    unmask_in_place(buffer, mask)
    assert bytes(buffer) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_a_payload_s_tensors_are_aligned_views_of_it() -> None:
    payload = Payload.of_size(4096 + 3)
    assert np.frombuffer(payload, np.float32, 1024).flags.aligned


def test_other_readers_and_senders_keep_websockets_behaviour() -> None:
    # The in-place unmasking is reserved to Payloads: a client masking what it sends copies as before.
    data = bytes(range(256)) * 400
    frame = Frame(Opcode.BINARY, data)
    assert frame.serialize(mask=True, extensions=[]) != data
    assert frame.data == data
    reader = StreamReader()
    assert not isinstance(reader, PayloadReader)


def _resident(payload: Payload) -> int:
    """Bytes of `payload` in memory now: its resident pages, as mincore(2) counts them."""
    page = mmap.PAGESIZE
    anchor = ctypes.c_char.from_buffer(payload)
    start = ctypes.addressof(anchor)
    pages = (len(payload) + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(len(payload)), vec) == 0, ctypes.get_errno()
    del anchor  # an export would keep the mapping from closing
    return page * sum(v & 1 for v in vec)


def test_a_small_payload_is_in_memory_at_once_a_large_one_as_it_arrives() -> None:
    # The budget counts up to POPULATE_BYTES of a payload before it arrives: that much may be taken at once.
    small, large = Payload.of_size(POPULATE_BYTES // 2), Payload.of_size(4 * POPULATE_BYTES)
    assert _resident(small) == POPULATE_BYTES // 2
    assert _resident(large) == 0
    large[: POPULATE_BYTES + 1] = b"x" * (POPULATE_BYTES + 1)
    assert POPULATE_BYTES < _resident(large) <= POPULATE_BYTES + 4096
    small.close()
    large.close()


async def test_a_small_payload_the_app_is_done_with_receives_the_next_one_of_its_size() -> None:
    spares = Spares(limit=4 * 8192, idle_seconds=60)
    first = Payload.of_size(8192)
    assert spares.give(first)  # the caller's reference was the only one
    assert spares.take(8192) is first and spares.take(8192) is None
    del first


async def test_a_payload_still_referenced_or_large_is_not_kept() -> None:
    spares = Spares(limit=16 * POPULATE_BYTES, idle_seconds=60)
    viewed = Payload.of_size(8192)
    tensor = np.frombuffer(viewed, np.float32)  # a delta read in place, still in use
    assert not spares.give(viewed)
    assert tensor.base is not None
    large = Payload.of_size(POPULATE_BYTES + 1)
    assert not spares.give(large)
    assert spares.bytes == 0


async def test_spares_are_bounded_and_go_back_once_none_is_taken() -> None:
    spares = Spares(limit=2 * 8192, idle_seconds=0.05)
    assert [spares.give(Payload.of_size(8192)) for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0.2)
    assert spares.bytes == 0 and spares.take(8192) is None


async def test_spares_in_use_stay_while_they_are_taken() -> None:
    spares = Spares(limit=4 * 8192, idle_seconds=0.1)
    payload = Payload.of_size(8192)
    spares.give(payload)
    del payload
    for _ in range(4):  # a round's replies keep taking and giving them back
        await asyncio.sleep(0.04)
        taken = spares.take(8192)
        assert taken is not None
        spares.give(taken)
        del taken
    assert spares.bytes == 8192


async def test_a_large_payload_is_kept_only_within_the_callers_cap() -> None:
    spares = Spares(limit=16 * POPULATE_BYTES, idle_seconds=60)
    size = 2 * POPULATE_BYTES
    assert not spares.give(Payload.of_size(size))  # no cap: no budget to count it against
    assert spares.give(Payload.of_size(size), cap=3 * POPULATE_BYTES)
    assert not spares.give(Payload.of_size(size), cap=3 * POPULATE_BYTES)  # 4 MiB would pass the cap
    assert spares.give(Payload.of_size(size), cap=4 * POPULATE_BYTES)
    assert spares.bytes == 2 * size


async def test_a_large_payload_goes_into_a_spare_only_when_the_budget_has_room_and_then_counts_whole() -> None:
    # A spare's pages are resident before its bytes arrive: counted as it arrives, a thousand parked uploads
    # could each hold a whole resident model that the budget sees as a read.
    size = 2 * POPULATE_BYTES
    SPARES.clear()
    try:
        for room in (False, True):
            spare = Payload.of_size(size)
            assert SPARES.give(spare, cap=size)
            protocol, reader = _server()
            reader.room = lambda n, room=room: room  # type: ignore[method-assign,misc]
            data = os.urandom(size)
            frame = _masked(data)
            protocol.receive_data(frame[:1000])
            assert reader.counted(POPULATE_BYTES) == (size if room else 1000 - 14 + POPULATE_BYTES)
            assert (SPARES.bytes == 0) is room
            protocol.receive_data(frame[1000:])
            (got,) = [e.data for e in protocol.events_received() if isinstance(e, Frame)]
            assert (got is spare) is room and bytes(got) == data  # type: ignore[comparison-overlap]
            del got, spare
            SPARES.clear()
    finally:
        SPARES.clear()
