"""Randomised holdouts: which chosen customers are left uncontacted, to measure the action.

The draw is a hash of (campaign, customer id), not a random generator: the same campaign
always holds out the same customers (reproducible, auditable by anyone with the ids), and a
new campaign draws afresh. Because the hash ignores segment and action, each segment x
action cell is held out at the configured share, within sampling error.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from serving.policy import NO_ACTION

_SCALE = float(2**64)


def uniform_draw(customer_ids: np.ndarray, campaign: str, purpose: str = "holdout") -> np.ndarray:
    """One number in [0, 1) per customer, fixed by (purpose, campaign, customer id)."""
    draws = np.empty(len(customer_ids))
    for k, customer in enumerate(np.asarray(customer_ids)):
        digest = hashlib.blake2b(f"{purpose}|{campaign}|{int(customer)}".encode(), digest_size=8).digest()
        draws[k] = int.from_bytes(digest, "big") / _SCALE
    return draws


def assign_holdouts(decisions: pd.DataFrame, campaign: str, share: float) -> pd.DataFrame:
    """Mark a `share` of the customers given an action as held out (`holdout` column).

    `decisions` columns: customer_id, action. Held-out customers keep the action they would
    have received (so the ledger can compare like with like), but are not contacted.
    """
    chosen = decisions["action"].to_numpy() != NO_ACTION
    draw = uniform_draw(decisions["customer_id"].to_numpy(), campaign)
    return decisions.assign(holdout=chosen & (draw < share))
