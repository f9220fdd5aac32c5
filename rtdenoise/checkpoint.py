"""Checkpoint files that hold data only: written as plain types, read with ``weights_only``.

A ``.pt`` file is a pickle, and a pickle may name any Python callable to run while it is read
(``os.system``, ``open``...). Every checkpoint a user can hand to rtdenoise (``--backend torch
--model x.pt``, ``rtdenoise export x.pt``, ``train.init=x.pt``, a resume file ``last.pt``) is
therefore read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and
dict/list/tuple containers only; anything else is refused with one line and nothing runs.

So that our own files pass that check, everything stored beside the tensors is converted to
plain types first (:func:`to_plain`: dataclasses -> dicts, tuples -> lists, numpy scalars ->
numbers, paths -> strings).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from .errors import UserError


def to_plain(obj: Any) -> Any:
    """``obj`` as JSON-like types and tensors (what ``weights_only`` loading accepts).

    dict keys are kept (str/int); tuples become lists, dataclasses dicts, numpy scalars Python
    numbers, numpy arrays tensors, paths strings. Raises ``TypeError`` for anything else.
    """
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (plain types only)")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file that would run code -> one-line UserError.

    Nothing in the file is executed: the restricted unpickler refuses any global that is not a
    tensor type or a plain container before calling it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it calls {found.group(1)})" if found else ""
        raise UserError(
            f"refusing to load {path}: it holds code, not only weights{what}; "
            "only plain-weights checkpoints are read"
        ) from None
    except Exception as exc:  # not a zip/pickle at all: assorted types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
