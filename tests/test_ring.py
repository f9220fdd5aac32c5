"""Ring buffer: FIFO order at every wraparound offset, overflow policies, counters, channels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdenoise.ring import RingBuffer


class _Model:
    """Reference FIFO on a Python list, with the documented overflow policies."""

    def __init__(self, capacity, policy):
        self.cap, self.policy, self.q = capacity, policy, []
        self.overflows = self.underflows = 0

    def write(self, rows):
        rows = list(rows)
        if self.policy == "refuse":
            keep = rows[: self.cap - len(self.q)]
            self.overflows += len(rows) - len(keep)
            self.q += keep
            return len(keep)
        self.q += rows
        drop = max(0, len(self.q) - self.cap)
        self.overflows += drop
        self.q = self.q[drop:]
        return min(len(rows), self.cap)

    def read(self, n):
        got, self.q = self.q[:n], self.q[n:]
        self.underflows += n - len(got)
        return got


def _frames(start, n, channels):
    """Distinct rows: value = 10*index + channel."""
    idx = np.arange(start, start + n, dtype=np.float32)[:, None]
    return (10 * idx + np.arange(channels, dtype=np.float32)).astype(np.float32)


def _check_read(ring, model, n, channels):
    out = np.full((n, channels), np.nan, np.float32)
    count = ring.read(out)
    want = model.read(n)
    assert count == len(want)
    expect = np.zeros((n, channels), np.float32)
    if want:
        expect[: len(want)] = np.array(want)
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8])
def test_wraparound_at_every_offset(capacity, channels):
    """Move the ring's start to each offset, then write/read every size up to capacity."""
    for offset in range(capacity):
        for n in range(1, capacity + 1):
            ring = RingBuffer(capacity, channels)
            ring.write(_frames(0, offset, channels))
            ring.skip(offset)
            x = _frames(100, n, channels)
            assert ring.write(x) == n
            assert ring.available == n and ring.free == capacity - n
            peeked = np.empty((n, channels), np.float32)
            assert ring.peek(peeked) == n
            np.testing.assert_array_equal(peeked, x)
            out = np.empty((n, channels), np.float32)
            assert ring.read(out) == n
            np.testing.assert_array_equal(out, x)
            assert ring.available == 0 and ring.overflows == 0 and ring.underflows == 0


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse"])
@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 9),
    channels=st.integers(1, 2),
    ops=st.lists(st.tuples(st.sampled_from(["w", "r", "s", "z"]), st.integers(0, 12)), max_size=30),
)
def test_matches_reference_fifo(policy, capacity, channels, ops):
    ring, model = RingBuffer(capacity, channels, overflow=policy), _Model(capacity, policy)
    counter = 0
    for op, n in ops:
        if op == "w":
            x = _frames(counter, n, channels)
            counter += n
            assert ring.write(x) == model.write(x.tolist())
        elif op == "z":
            assert ring.write_zeros(n) == model.write([[0.0] * channels] * n)
        elif op == "r":
            _check_read(ring, model, n, channels)
        else:
            k = min(n, len(model.q))
            model.q = model.q[k:]
            assert ring.skip(n) == k
        assert ring.available == len(model.q)
        assert (ring.overflows, ring.underflows) == (model.overflows, model.underflows)


def test_counters_and_policies():
    ring = RingBuffer(4, 1, overflow="refuse")
    assert ring.write(np.arange(6, dtype=np.float32)) == 4
    assert ring.overflows == 2
    out = np.empty(6, np.float32)
    assert ring.read(out) == 4 and ring.underflows == 2
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 0, 0])

    ring = RingBuffer(4, 1, overflow="drop_oldest")
    ring.write(np.arange(3, dtype=np.float32))
    ring.write(np.arange(3, 6, dtype=np.float32))  # drops 0 and 1
    assert ring.overflows == 2
    out = np.empty(4, np.float32)
    ring.read(out)
    np.testing.assert_array_equal(out, [2, 3, 4, 5])
    ring.reset()
    assert (ring.available, ring.overflows, ring.underflows) == (0, 0, 0)


def test_peek_offset_and_noncontiguous_views():
    ring = RingBuffer(5, 2)
    ring.write(_frames(0, 3, 2))
    ring.skip(3)
    src = np.ascontiguousarray(_frames(7, 4, 2).T).T  # [n, C] view of a [C, n] array
    assert not src.flags.c_contiguous
    ring.write(src)
    out = np.empty((2, 4), np.float32).T  # non-contiguous destination
    assert ring.peek(out, offset=1) == 3
    np.testing.assert_array_equal(out[:3], _frames(8, 3, 2))
    np.testing.assert_array_equal(out[3], 0)
    assert ring.available == 4  # peek consumed nothing


def test_bad_shapes():
    ring = RingBuffer(8, 2)
    with pytest.raises(ValueError):
        ring.write(np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        RingBuffer(0, 1)
    with pytest.raises(ValueError):
        RingBuffer(4, 1, overflow="block")
