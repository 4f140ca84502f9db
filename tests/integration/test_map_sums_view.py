"""The `map_sums` view answers a grouped mean-map query as the stored maps do, sees only committed shards, and is
written by every shard commit (nothing for the writer to do)."""

import numpy as np
from attn_audit.storage import tables
from attn_audit.storage.store import Store

from tests.integration.small_store import build_store
from tests.integration.test_store import fake_explanations, make_spec

FROM_MAPS = """SELECT e.method, e.modality, p.label, pos - 1 AS position, avg(v) AS mean, count(*) AS maps FROM (
    SELECT *, unnest(relevance) AS v, generate_subscripts(relevance, 1) AS pos FROM explanations) e
    JOIN predictions p USING (run_id, sample_id, target_index) GROUP BY ALL"""
FROM_SUMS = """SELECT method, modality, label, position, sum(relevance_sum) / sum(maps) AS mean, sum(maps) AS maps
    FROM map_sums GROUP BY ALL"""


def by_key(table):
    return {(r["method"], r["modality"], r["label"], r["position"]): (r["mean"], r["maps"]) for r in table.to_pylist()}


def test_the_mean_map_per_label_from_map_sums_equals_the_one_from_the_maps(tmp_path):
    store, _ = build_store(tmp_path / "store", n=9, shard_size=4)
    from_maps, from_sums = by_key(store.sql(FROM_MAPS)), by_key(store.sql(FROM_SUMS))
    assert from_maps.keys() == from_sums.keys() and len(from_maps) > 10
    for key, (mean, maps) in from_maps.items():
        assert from_sums[key][1] == maps and np.isclose(from_sums[key][0], mean, rtol=1e-6), key


def test_the_sums_of_a_shard_without_its_marker_are_not_visible(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    run = store.begin_run(make_spec(n=4, shard_size=2))
    exps = fake_explanations(["s000", "s001"], run.methods, np.random.default_rng(0))
    store.commit_shard(run.run_id, 0, explanations=tables.explanation_table(exps, run.run_id),
                       predictions=tables.prediction_table(exps, run.run_id))
    # shard 1's rows land, its marker does not (a writer killed between the two commits)
    store._append_once("map_sums", store.sql("SELECT * REPLACE (1 AS shard_id) FROM map_sums"), "test:orphan")
    assert store.sql("SELECT DISTINCT shard_id FROM map_sums").column(0).to_pylist() == [0]
