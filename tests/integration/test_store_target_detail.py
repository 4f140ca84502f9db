"""Many-target rows in the store: target_detail round-trips, and stores written before it existed stay usable."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from attn_audit.storage import tables
from attn_audit.storage.store import RunSpec, Store, layout

from attn_audit import models
from tests import tiny_encdec


def spec(n: int, data: str = "d") -> RunSpec:
    return RunSpec(model_ref="tiny-detr", model_fingerprint="m" * 64, dataset_ref="builtin:fake",
                   dataset_fingerprint=data * 64, methods=("chefer2021",), num_samples=n, shard_size=n)


def detections(threshold: float):
    m = models.wrap(tiny_encdec.detr(), device="cpu", transform=tiny_encdec.DETR_TRANSFORM, threshold=threshold)
    return models.explain(m, m.preprocess(tiny_encdec.images(3, 40)), method="chefer2021")


def commit(store: Store, exps, data: str = "d") -> str:
    run = store.begin_run(spec(3, data))
    store.commit_shard(run.run_id, 0, explanations=tables.explanation_table(exps, run.run_id),
                       predictions=tables.prediction_table(exps, run.run_id), errors=None)
    return run.run_id


@pytest.fixture(scope="module")
def exps():
    return detections(tiny_encdec.DETR_THRESHOLD)


def test_one_row_per_detection_with_its_box_and_one_noted_row_per_empty_image(tmp_path, exps):
    empty = detections(1.0)  # nothing is that sure: every image has no detections
    assert all(e.ok and e.note and not e.relevance for e in empty)
    store = Store.open(tmp_path / "s", create=True)
    run_id = commit(store, exps + [e for e in empty if e.sample_id == "img0"])
    preds = store.predictions(run_id=run_id).to_pylist()
    boxes = [json.loads(p["target_detail"]) for p in preds if p["target_index"] is not None]
    assert len(boxes) == len(exps) and all(len(b["box"]) == 4 and "label" in b for b in boxes)
    noted = [json.loads(p["target_detail"]) for p in preds if p["target_index"] is None]
    assert len(noted) == 1 and "no detections" in noted[0]["note"]
    maps = store.explanations(run_id=run_id)
    assert maps.num_rows == len(exps)  # the noted row has no map
    keys = {(r["sample_id"], r["target_index"]) for r in maps.to_pylist()}
    assert keys == {(e.sample_id, e.target) for e in exps}


def test_a_store_written_before_target_detail_existed_opens_reads_and_takes_new_rows(tmp_path, monkeypatch, exps):
    old = tables.PREDICTIONS.remove(tables.PREDICTIONS.get_field_index("target_detail"))
    with monkeypatch.context() as patch:  # write the store as the previous version did
        patch.setitem(layout.TABLES, "predictions", layout.TableSpec("predictions", old, ("run_id",), True))
        patch.delitem(layout.ADDED_COLUMNS, "predictions")
        store = Store.open(tmp_path / "old", create=True)
        run = store.begin_run(spec(3))
        rows = tables.prediction_table(exps, run.run_id).drop_columns(["target_detail"])
        store.commit_shard(run.run_id, 0, explanations=None, predictions=rows, errors=None)
        assert "target_detail" not in store.predictions().column_names
    reopened = Store.open(tmp_path / "old")
    assert reopened.predictions().column("target_detail").null_count == len(exps)
    new_run = commit(reopened, exps, data="e")
    got = reopened.sql(f"SELECT target_detail FROM predictions WHERE run_id = '{new_run}'")
    assert got.num_rows == len(exps) and got.column(0).null_count == 0
    everything = reopened.sql("SELECT count(*) AS n, count(target_detail) AS detailed FROM predictions")
    assert everything.to_pylist() == [{"n": 2 * len(exps), "detailed": len(exps)}]
    stored = pa.schema(reopened.delta("predictions").schema().to_arrow()).field("target_detail")
    assert stored.type in (pa.string(), pa.large_string(), pa.string_view())
