"""Deterministic train/validation/test split by hashing the entity key.

blake2b of salt + key is the same on every run and machine, and an entity
stays in its split when rows are added or reordered.
"""

from __future__ import annotations

import hashlib
from typing import Any, Collection

import numpy as np


def split_labels(keys: Collection[Any], valid: float, test: float, salt: str) -> np.ndarray:
    salt_b = salt.encode()
    u = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8, key=salt_b[:64]).digest(), "big") / 2.0**64
            for k in keys
        ),
        dtype=np.float64,
        count=len(keys),
    )
    out = np.full(len(keys), "train", dtype=object)
    out[u < test + valid] = "valid"
    out[u < test] = "test"
    return out
