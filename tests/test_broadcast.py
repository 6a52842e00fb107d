"""The round's broadcast holds no copy of the global weights: it is made of the buffers Flower keeps them in."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from websockets.frames import Frame, Opcode

from coordinator.federation.broadcast import Broadcast
from coordinator.federation.weights import WeightsEncoder, float32_view
from coordinator.models.spec import load_spec
from coordinator.protocol import Chunk, Task, decode, encode_tensors
from coordinator.protocol.chunking import CHUNK_OVERHEAD, Reassembler, SharedFrame, SharedPiece
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.frame import PREFIX, encode_frame
from coordinator.protocol.tensors import decode_tensors
from coordinator.server.transport import _binary_frame_head

MODEL = load_spec("mnist-mlp").raw  # any valid spec: the frames here are checked as a client would


def record(seed: int = 0) -> tuple[ArrayRecord, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tensors = {
        "layers.0.weight": rng.standard_normal((32, 20), dtype=np.float32),
        "layers.0.bias": rng.standard_normal(32, dtype=np.float32),
        "layers.2.weight": rng.standard_normal((10, 32), dtype=np.float32),
        "layers.2.bias": rng.standard_normal(10, dtype=np.float32),
    }
    return ArrayRecord({k: Array(v) for k, v in tensors.items()}), tensors


def test_encoded_weights_are_views_of_flowers_own_buffers() -> None:
    arrays, tensors = record()
    encoded = WeightsEncoder().encode(arrays)
    assert list(encoded.tensors) == list(arrays)  # the record's order, which FedAvgM's momentum relies on
    for name, t in encoded.tensors.items():
        np.testing.assert_array_equal(t, tensors[name])
        assert not t.flags.writeable
        assert np.shares_memory(t, np.frombuffer(arrays[name].data, np.uint8))


def test_arrays_that_are_not_c_ordered_float32_npy_are_converted() -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    for array, expected in [
        (Array(fortran), fortran),
        (Array(np.arange(4, dtype=np.float64)), np.arange(4, dtype=np.float32)),
        (Array(np.zeros((0, 3), np.float32)), np.zeros((0, 3), np.float32)),
        (Array(np.array(2.5, np.float32)), np.float32(2.5)),
    ]:
        view = float32_view(array)
        assert view.dtype == np.float32 and view.flags.c_contiguous and not view.flags.writeable
        np.testing.assert_array_equal(view, expected)


@pytest.mark.parametrize("offset", range(16))
def test_the_payload_is_the_safetensors_file_with_its_tensors_aligned_in_the_frame(offset: int) -> None:
    arrays, tensors = record()
    encoded = WeightsEncoder().encode(arrays)
    head, *data = encoded.payload(offset)
    assert (offset + len(head)) % 8 == 0
    assert all(isinstance(part, memoryview) for part in data)  # the tensors themselves, not copies
    whole = b"".join([head, *data])
    decoded = decode_tensors(whole)
    assert decoded.keys() == tensors.keys()
    for name, t in tensors.items():
        np.testing.assert_array_equal(decoded[name], t)
    assert encoded.safetensors == encode_tensors(tensors)  # laid out as the safetensors library writes it


@pytest.mark.parametrize("pace", [64 * 1024, 4096, 1000])
def test_a_shared_frame_made_of_parts_is_the_frame_and_its_pieces_copy_nothing(pace: int) -> None:
    arrays, _ = record()
    encoded = WeightsEncoder().encode(arrays)
    head = encode_frame(Task("train", "t1", "r", 1, MODEL, {}).header())
    parts = encoded.payload(len(head))
    frame = SharedFrame(head, parts, pace_bytes=pace)
    assert frame.join() == head + b"".join(parts)
    pieces = frame.frames(1 << 24)
    assert pieces is frame.frames(1 << 24)  # made once, shared by every peer
    assert all(isinstance(p, SharedPiece) and len(p) <= pace for p in pieces)
    views = [np.frombuffer(part, np.uint8) for p in pieces for part in p.parts if isinstance(part, memoryview)]
    for name in arrays:  # every tensor's bytes go out from Flower's own buffer: no piece holds a copy
        assert any(np.shares_memory(v, np.frombuffer(arrays[name].data, np.uint8)) for v in views)
    joiner = Reassembler(1 << 24)
    whole = [m for m in (_whole(joiner, bytes(p)) for p in pieces) if m is not None]
    assert len(whole) == 1 and whole[0] == frame.join()
    task = decode(whole[0])
    assert isinstance(task, Task)
    decoded = decode_tensors(task.weights)
    for name in arrays:
        np.testing.assert_array_equal(decoded[name], arrays[name].numpy())


def test_a_frame_too_small_to_chunk_into_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        SharedFrame(b"x" * 100, b"y" * 10_000, pace_bytes=CHUNK_OVERHEAD + PREFIX.size)


@pytest.mark.parametrize("encoding", ["fp32", "fp16", "int8"])
def test_every_broadcast_encoding_puts_the_tensors_at_an_aligned_offset(encoding: Encoding) -> None:
    arrays, tensors = record()
    head = encode_frame(Task("train", "t1", "r", 1, MODEL, {}).header())
    frame = Broadcast(head, WeightsEncoder().encode(arrays), encoding).frame(encoding, count=False).join()
    task = decode(frame)
    assert isinstance(task, Task)
    start = len(frame) - len(task.weights)
    (length,) = np.frombuffer(bytes(task.weights[:8]), "<u8")
    assert (start + 8 + int(length)) % 8 == 0  # SPEC §2: the data section starts 8-aligned in the frame
    decoded = decode_tensors(task.weights)
    tolerance = {"fp32": 0.0, "fp16": 2e-3, "int8": 3e-2}[encoding]
    for name, t in tensors.items():
        np.testing.assert_allclose(decoded[name], t, atol=tolerance * float(np.abs(t).max()), rtol=0)


def _whole(joiner: Reassembler, data: bytes) -> bytes | None:
    """A received frame, or the whole frame once its last chunk is in."""
    message = decode(data)
    return joiner.feed(message) if isinstance(message, Chunk) else data


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65_535, 65_536, 300_000])
def test_a_shared_piece_is_framed_as_websockets_frames_a_binary_message(length: int) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    ours = _binary_frame_head(length) + data
    assert ours == Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])
