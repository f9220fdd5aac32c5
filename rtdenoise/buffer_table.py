"""Arrays by address: one int64 table in place of dozens of array arguments to a compiled call.

Entering a numba function checks and unboxes every array argument, ~0.15-0.2 us each on the
project's 2-core hosts. Live mode's compiled hop (:mod:`rtdenoise.hop_path`) worked on ~85
arrays in two calls per 31-sample hop: ~3 ms of CPU per second of audio went to argument
dispatch alone, ~15 % of live mode's cost. The arrays are the engine's own preallocated
buffers, the same on every call, so :class:`BufferTable` records each one's address and shape
once; the kernel rebuilds its views from the table (:func:`f32_2` and the others: a pointer
cast, no copy, no allocation), and the call carries one array instead of the ~85.

Contract: every array is C-contiguous and of the dtype and rank its slot declares (checked when
the table is built); the table holds a reference to each, so none is freed while it is in use;
whoever owns the table rebuilds it when one of its arrays is replaced (the hop path: when a
resampler grows its buffers). An array's contents may change freely, its memory may not move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: a table row: the array's address, then its shape padded with 1 to three dimensions
ADDRESS = 0


class BufferTable:
    """Slots ``(name, dtype, ndim)`` in a fixed order; :meth:`build` -> the int64 table
    ``[slots, 4]`` of their arrays (address, shape), checked against the slots."""

    def __init__(self, slots: Sequence[tuple[str, type, int]]) -> None:
        self.slots = list(slots)
        #: slot name -> row: the index the kernel reads the slot's array with
        self.index = {name: i for i, (name, _, _) in enumerate(self.slots)}
        self._held: list[np.ndarray] = []

    def build(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The table of ``arrays`` (one per slot, by name); raises ValueError on an array that
        is missing, not C-contiguous, or not of its slot's dtype and rank."""
        table = np.ones((len(self.slots), 4), np.int64)
        held = []
        for i, (name, dtype, ndim) in enumerate(self.slots):
            a = arrays.get(name)
            if not isinstance(a, np.ndarray):
                raise ValueError(f"slot {name!r}: no array")
            if a.dtype != np.dtype(dtype) or a.ndim != ndim or not a.flags.c_contiguous:
                raise ValueError(
                    f"slot {name!r} takes a C-contiguous {np.dtype(dtype)} array of rank {ndim},"
                    f" got {a.dtype} {a.shape} (C-contiguous: {a.flags.c_contiguous})"
                )
            table[i, ADDRESS] = a.ctypes.data
            table[i, 1 : 1 + ndim] = a.shape
            held.append(a)
        self._held = held  # alive while the table is in use
        return table


@intrinsic
def _pointer(typingctx, address):  # pragma: no cover - compiled
    """int64 -> void pointer (the address of an array's first element)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


# the views a kernel takes: row i of the table as an array of the dtype and rank of its slot
@njit(cache=True, nogil=True, inline="always")
def f32_1(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1],), np.float32)


@njit(cache=True, nogil=True, inline="always")
def f32_2(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2]), np.float32)


@njit(cache=True, nogil=True, inline="always")
def f32_3(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2], t[i, 3]), np.float32)


@njit(cache=True, nogil=True, inline="always")
def f64_1(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1],), np.float64)


@njit(cache=True, nogil=True, inline="always")
def f64_2(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2]), np.float64)


@njit(cache=True, nogil=True, inline="always")
def f64_3(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2], t[i, 3]), np.float64)


@njit(cache=True, nogil=True, inline="always")
def i64_1(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1],), np.int64)


@njit(cache=True, nogil=True, inline="always")
def c64_2(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2]), np.complex64)


@njit(cache=True, nogil=True, inline="always")
def c64_3(t, i):  # pragma: no cover - compiled
    return carray(_pointer(t[i, 0]), (t[i, 1], t[i, 2], t[i, 3]), np.complex64)
