"""Reproducible per-customer random numbers: a hash of (purpose, key, customer id).

Holdouts and simulated outcomes use these instead of a random generator, so the same
campaign always gives the same draws (auditable by anyone with the ids), whatever the
order or subset of customers it is computed on.
"""

from __future__ import annotations

import hashlib

import numpy as np

from churn.ids import ids_text

_SCALE = float(2**64)


def uniform_draw(customer_ids: np.ndarray, key: str, purpose: str) -> np.ndarray:
    """One number in [0, 1) per customer, fixed by (purpose, key, customer id).

    The hash is of the id's text (`churn.ids.id_text`): an integer id draws what its
    decimal text draws, so integer ledgers and text ones give the same holdouts.
    """
    ids = ids_text(customer_ids)
    draws = np.empty(len(ids))
    for k, customer in enumerate(ids):
        digest = hashlib.blake2b(f"{purpose}|{key}|{customer}".encode(), digest_size=8).digest()
        draws[k] = int.from_bytes(digest, "big") / _SCALE
    return draws
