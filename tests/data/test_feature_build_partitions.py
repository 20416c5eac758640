"""The one-machine feature build in customer partitions writes the same tables as in one piece."""

from __future__ import annotations

import pandas as pd
import pytest

from features.build import build_feature_tables, build_partitions


def test_partition_count_follows_the_population():
    assert build_partitions(1, 125_000) == 1
    assert build_partitions(125_000, 125_000) == 1
    assert build_partitions(125_001, 125_000) == 2
    assert build_partitions(1_000_000, 125_000) == 8
    with pytest.raises(ValueError, match="partition_customers"):
        build_partitions(10, 0)


def test_partitioned_build_equals_unpartitioned(engine, tmp_path):
    raw = engine.settings.raw_dir
    whole = build_feature_tables(raw, tmp_path / "whole", partitions=1)
    parts = build_feature_tables(raw, tmp_path / "parts", partitions=3)
    # the partition count chosen from the population: 2,000 customers at 700 a partition = 3
    auto = build_feature_tables(raw, tmp_path / "auto", partition_customers=700)
    assert whole.rows == parts.rows == auto.rows > 0
    assert (whole.snapshots, whole.first_snapshot) == (parts.snapshots, parts.first_snapshot)
    for view, path in whole.tables.items():
        expected = pd.read_parquet(path)
        assert len(expected) == whole.rows
        # same rows, same order, same types, same bits: the tables are interchangeable
        pd.testing.assert_frame_equal(pd.read_parquet(parts.tables[view]), expected, check_exact=True)
        pd.testing.assert_frame_equal(pd.read_parquet(auto.tables[view]), expected, check_exact=True)
        # and equal to the engine's own build (default settings)
        pd.testing.assert_frame_equal(pd.read_parquet(engine.features.tables[view]), expected)
    assert not (tmp_path / "parts" / "_build").exists(), "the scratch database is removed"
