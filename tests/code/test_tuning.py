"""The self-tuning LightGBM of ingested data sets: which split it searches on, what it keeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.errors import DataError
from training.tuning import CANDIDATES, AutoTunedModel


def _frame(n: int, stamps: list[str], seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    plan = rng.choice(["a", "b", "c"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * x + (plan == "a"))))).astype(int)
    frame = pd.DataFrame({"x": x, "noise": rng.normal(size=n), "plan": plan})
    frame["event_timestamp"] = pd.to_datetime(rng.choice(stamps, n), utc=True)
    return frame, y


def test_a_snapshot_is_searched_by_inner_folds_and_keeps_their_models():
    X, y = _frame(800, ["2024-06-01"])
    model = AutoTunedModel(["x", "noise", "plan"], ["plan"], ensemble=2, inner_folds=4, search_patience=None).fit(X, y)
    assert len(model.search_) == len(CANDIDATES)
    aucs = [c["validation_auc"] for c in model.search_]
    assert aucs == sorted(aucs, reverse=True) and 0.7 < aucs[0] < 1
    assert all(c["params"]["learning_rate"] == model.snapshot_learning_rate for c in model.search_)
    # CV bagging: the 2 best settings x 4 fold models, each cut at its setting's early-stopped round
    assert len(model.boosters_) == 8
    rounds = [b.current_iteration() for b in model.boosters_]
    assert rounds == [model.search_[0]["rounds"]] * 4 + [model.search_[1]["rounds"]] * 4
    test, y_test = _frame(2_000, ["2024-06-01"], seed=1)
    assert roc_auc_score(y_test, model.predict(test)) > 0.75


def test_a_snapshot_with_too_few_churners_for_the_inner_folds_is_refused():
    X, _ = _frame(100, ["2024-06-01"])
    y = np.zeros(100, dtype=int)
    y[:2] = 1
    with pytest.raises(DataError, match="2 churned and 98 retained customers; the search needs at least 3 of each"):
        AutoTunedModel(["x", "noise", "plan"], ["plan"]).fit(X, y)


def test_logs_are_searched_on_the_latest_cutoff_and_refitted():
    X, y = _frame(1_500, ["2024-01-07", "2024-02-04", "2024-03-03"])
    model = AutoTunedModel(["x", "noise", "plan"], ["plan"], gap_days=28).fit(X, y)
    assert len(model.boosters_) == model.ensemble
    assert all(c["params"]["learning_rate"] == 0.05 for c in model.search_)


def test_a_refit_on_more_than_refit_rows_grows_each_tree_on_a_random_share_of_them():
    X, y = _frame(6_000, ["2024-01-07", "2024-02-04", "2024-03-03"])
    names = ["x", "noise", "plan"]
    every = AutoTunedModel(names, ["plan"], gap_days=28, search_patience=None, refit_rows=None).fit(X, y)
    bagged = AutoTunedModel(names, ["plan"], gap_days=28, search_patience=None, refit_rows=1_000, refit_threads=2).fit(X, y)
    assert bagged.search_ == every.search_  # the search never sees the refit's setting
    # one Dataset binned for candidates of different min_data_in_leaf
    assert len({c["params"]["min_data_in_leaf"] for c in bagged.search_[: bagged.ensemble]}) > 1
    assert [b.current_iteration() for b in bagged.boosters_] == [b.current_iteration() for b in every.boosters_]
    assert all(b.params["bagging_fraction"] == 1_000 / 6_000 and b.params["num_threads"] == 2 for b in bagged.boosters_)
    assert all("bagging_fraction" not in b.params and b.params["num_threads"] == 1 for b in every.boosters_)
    test, y_test = _frame(4_000, ["2024-03-03"], seed=1)
    p_every, p_bagged = every.predict(test), bagged.predict(test)
    assert not np.allclose(p_every, p_bagged)
    assert roc_auc_score(y_test, p_bagged) > roc_auc_score(y_test, p_every) - 0.02


def test_logs_without_a_cutoff_a_horizon_older_than_the_latest_are_refused():
    X, y = _frame(600, ["2024-02-25", "2024-03-03"])
    with pytest.raises(DataError, match="no training cutoff is 28 days older than the latest"):
        AutoTunedModel(["x", "noise", "plan"], ["plan"], gap_days=28).fit(X, y)


def test_the_search_stops_when_more_leaves_stop_paying():
    X, y = _frame(3_000, ["2024-06-01"])  # an additive signal: stumps are as good as it gets
    full = AutoTunedModel(["x", "noise", "plan"], ["plan"], search_patience=None).fit(X, y)
    early = AutoTunedModel(["x", "noise", "plan"], ["plan"], search_patience=2).fit(X, y)
    setting = lambda c: {k: v for k, v in c["params"].items() if k != "learning_rate"}  # noqa: E731
    aucs = [c["validation_auc"] for c in sorted(full.search_, key=lambda c: CANDIDATES.index(setting(c)))]
    # stop after the first two candidates in a row that do not beat the best before them
    stop = next(i for i in range(3, len(aucs) + 1) if max(aucs[i - 2:i]) < max(aucs[: i - 2]) + 0.0005)
    assert stop < len(CANDIDATES)
    assert [setting(c) for c in early.search_] == [setting(c) for c in full.search_ if CANDIDATES.index(setting(c)) < stop]
    assert [c["validation_auc"] for c in early.search_] == sorted(aucs[:stop], reverse=True)


def test_fits_side_by_side_are_the_fits_one_after_another():
    from training.fits import fit_models

    X, y = _frame(1_200, ["2024-06-01"])
    rows = [np.arange(0, 800), np.arange(400, 1_200), np.arange(1_200)]
    make = lambda: AutoTunedModel(["x", "noise", "plan"], ["plan"], ensemble=2)  # noqa: E731
    done = []
    apart = fit_models(make, X, y, rows, n_jobs=2, progress=lambda k, total: done.append((k, total)))
    serial = fit_models(make, X, y, rows, n_jobs=1)
    assert done == [(1, 3), (2, 3), (3, 3)]
    for a, b in zip(apart, serial):
        assert a.booster_.model_to_string() == b.booster_.model_to_string()  # bit for bit, in the order of the row sets


def test_a_large_frame_is_searched_on_a_sample_and_refitted_on_every_row():
    X, y = _frame(3_000, ["2024-01-07", "2024-02-04", "2024-03-03"])
    model = AutoTunedModel(["x", "noise", "plan"], ["plan"], gap_days=28, search_rows=400).fit(X, y)
    latest = (X["event_timestamp"] == X["event_timestamp"].max()).to_numpy()
    # validated on 400 of the latest cutoff's rows (the calibration's held-out rows), in their order
    assert len(model.held_out_rows_) == 400 and latest[model.held_out_rows_].all()
    assert (np.diff(model.held_out_rows_) > 0).all()
    # refitted on all 3,000 rows: the refit's rounds are the searched ones, grown by the rows it gained (at most 1.5x)
    growth = min(len(X) / (~latest & (X["event_timestamp"] <= X["event_timestamp"].max() - pd.Timedelta(days=28))).sum(), 1.5)
    assert [b.current_iteration() for b in model.boosters_] == [max(1, round(c["rounds"] * growth)) for c in model.search_[: model.ensemble]]
    roots = [b.dump_model()["tree_info"][0]["tree_structure"] for b in model.boosters_]
    assert all(root.get("internal_count", root.get("leaf_count")) == len(X) for root in roots)  # every row went into the trees
    test, y_test = _frame(2_000, ["2024-03-03"], seed=1)
    assert roc_auc_score(y_test, model.predict(test)) > 0.75
