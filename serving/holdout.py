"""Randomised holdouts: which chosen customers are left uncontacted, to measure the action.

The draw is a hash of (campaign, customer id), not a random generator: the same campaign
always holds out the same customers (reproducible, auditable by anyone with the ids), and a
new campaign draws afresh. Because the hash ignores segment and action, each segment x
action cell is held out at the configured share, within sampling error.
"""

from __future__ import annotations

import pandas as pd

from churn.draws import uniform_draw
from serving.policy import NO_ACTION


def assign_holdouts(decisions: pd.DataFrame, campaign: str, share: float) -> pd.DataFrame:
    """Mark a `share` of the customers given an action as held out (`holdout` column).

    `decisions` columns: customer_id, action. Held-out customers keep the action they would
    have received (so the ledger can compare like with like), but are not contacted.
    """
    chosen = decisions["action"].to_numpy() != NO_ACTION
    draw = uniform_draw(decisions["customer_id"].to_numpy(), campaign, purpose="holdout")
    return decisions.assign(holdout=chosen & (draw < share))
