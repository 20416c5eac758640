"""Holdouts: stable across runs, fresh per campaign, at the configured share in every cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.draws import uniform_draw
from serving.holdout import assign_holdouts
from serving.policy import NO_ACTION


def _decisions(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "action": rng.choice(["call", "email", NO_ACTION], n, p=[0.3, 0.5, 0.2]),
            "segment": rng.choice(["low", "medium", "high"], n),
        }
    )


def test_same_campaign_holds_out_the_same_customers():
    decisions = _decisions(5_000)
    first = assign_holdouts(decisions, "spring", 0.2)
    again = assign_holdouts(decisions.sample(frac=1.0, random_state=3), "spring", 0.2).sort_values("customer_id")
    assert first["holdout"].tolist() == again["holdout"].tolist()


def test_another_campaign_draws_afresh():
    decisions = _decisions(5_000)
    a = assign_holdouts(decisions, "spring", 0.2)["holdout"].to_numpy()
    b = assign_holdouts(decisions, "summer", 0.2)["holdout"].to_numpy()
    # independent draws overlap at about 0.2 x 0.2 of the chosen customers, not 0.2
    chosen = (decisions["action"] != NO_ACTION).to_numpy()
    assert (a & b)[chosen].mean() == pytest.approx(0.04, abs=0.015)


def test_nobody_without_an_action_is_held_out():
    held = assign_holdouts(_decisions(2_000), "c", 0.5)
    assert not held.loc[held["action"] == NO_ACTION, "holdout"].any()


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_share_matches_the_config_in_every_segment_x_action(share):
    held = assign_holdouts(_decisions(20_000, seed=1), "cells", share)
    cells = held[held["action"] != NO_ACTION].groupby(["segment", "action"])["holdout"].agg(["mean", "size"])
    assert len(cells) == 6
    for (segment, action), row in cells.iterrows():
        # within 4 binomial standard errors (a false alarm about once in 15,000 cells)
        se = np.sqrt(share * (1 - share) / row["size"])
        assert abs(row["mean"] - share) < 4 * se, f"{segment} x {action}: {row['mean']:.3f} held out, wanted {share}"


def test_draw_is_uniform_and_depends_on_purpose():
    ids = np.arange(10_000)
    draw = uniform_draw(ids, "c", purpose="holdout")
    assert ((draw >= 0) & (draw < 1)).all()
    assert np.histogram(draw, bins=10, range=(0, 1))[0].min() > 900
    assert not np.array_equal(draw, uniform_draw(ids, "c", purpose="outcome"))


def test_an_integer_id_draws_what_its_text_draws():
    """Ids became text: the draw hashes the id's text, so integer ids keep the draws they always had."""
    import hashlib

    ints = np.array([0, 7, 123, 2**40 + 3], dtype=np.int64)
    texts = np.array(["0", "7", "123", str(2**40 + 3)], dtype=object)
    np.testing.assert_array_equal(uniform_draw(ints, "spring", "holdout"), uniform_draw(texts, "spring", "holdout"))
    assert uniform_draw([123], "k", "p")[0] == uniform_draw(["123"], "k", "p")[0]
    # the hash as it was: blake2b of 'purpose|key|<int>'
    before = int.from_bytes(hashlib.blake2b(b"holdout|spring|123", digest_size=8).digest(), "big") / 2.0**64
    assert uniform_draw(["123"], "spring", "holdout")[0] == before
    # a text id draws too, and differently from its neighbours
    assert len(set(uniform_draw(["7590-VHVEG", "7590-VHVEH", "123"], "spring", "holdout"))) == 3
