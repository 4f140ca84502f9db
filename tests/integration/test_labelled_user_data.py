"""A user's own labelled data on builtin:fashion-vit: labels matched to the model's classes by name (folders that
are a subset of the classes, reordered / odd-case / integer labels, a mapping), never by the dataset's own class
order; unknown labels refused before any work; accuracy against a hand count."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from attn_audit.flows.plan import model_fingerprint, plan_run
from attn_audit.flows.request import AuditRequest
from attn_audit.storage.datasets import CLASS_NAMES, open_dataset
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.explain_shard import explain_shard
from attn_audit.tasks.labels import LabelError
from attn_audit.tasks.shards import Shard
from PIL import Image

from attn_audit import models

MODEL = "builtin:fashion-vit"
PER_CLASS = 4


@pytest.fixture(scope="module")
def vit():
    return models.load(MODEL, device="cpu")


@pytest.fixture(scope="module")
def canvases():
    """PER_CLASS test canvases of Bag, Sneaker, Trouser and T-shirt/top: {class name: [image arrays]}."""
    dataset = open_dataset("builtin:fashion-canvas?split=test&n=200")
    wanted = {"Bag", "Sneaker", "Trouser", "T-shirt/top"}
    out: dict[str, list] = {name: [] for name in wanted}
    for i in range(len(dataset)):
        sample = dataset[i]
        name = CLASS_NAMES[sample["label"]]
        if name in wanted and len(out[name]) < PER_CLASS:
            out[name].append(sample["image"])
    assert all(len(v) == PER_CLASS for v in out.values())
    return out


def image_folder(root, folders: dict[str, list]):
    for folder, images in folders.items():
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / folder / f"{i}.png")
    return f"imagefolder:{root}"


def explain_all(m, data_ref: str, store_path, label_map=None, target="predicted"):
    """The shard code the flow's actors run, over the whole dataset as one shard; (predictions, errors)."""
    store = Store.open(store_path, create=True)
    dataset = open_dataset(data_ref)
    spec = RunSpec(MODEL, model_fingerprint(MODEL), dataset.ref, dataset.fingerprint(), ("rollout",),
                   {"target": target}, num_samples=len(dataset), shard_size=len(dataset))
    run = store.begin_run(spec)
    explain_shard(m, dataset, store, run.run_id, Shard(0, 0, len(dataset)), ["rollout"], target=target,
                  batch_size=8, label_map=label_map)
    return store.predictions(run_id=run.run_id).to_pylist(), store.errors(run_id=run.run_id).to_pylist()


def hand_count(m, images_by_class: dict[str, list]) -> int:
    """How many images the model puts in the class they are labelled with, counted directly."""
    right = 0
    for name, images in images_by_class.items():
        exps = models.explain(m, m.preprocess([{"image": x} for x in images]), method="raw_attention")
        right += sum(m.label_names[e.prediction] == name for e in exps)
    return right


def test_class_folders_that_are_a_subset_of_the_model_classes(vit, canvases, tmp_path):
    subset = {name: canvases[name] for name in ("Bag", "Sneaker", "Trouser")}
    data = image_folder(tmp_path / "images", subset)
    preds, errors = explain_all(vit, data, tmp_path / "store")
    assert not errors and len(preds) == 3 * PER_CLASS
    for p in preds:
        assert p["label"] == p["sample_id"].split("/")[0]  # the folder name as given
        assert p["correct"] == (p["target_label"] == p["label"])  # the predicted class's name against the label
    assert sum(p["correct"] for p in preds) == hand_count(vit, subset)
    assert sum(p["correct"] for p in preds) >= 9  # the model does know these items


def test_folders_holding_other_items_are_wrong_not_right(vit, canvases, tmp_path):
    """Folders `Bag/` with T-shirts and `Dress/` with trousers: the old code named predictions from the
    dataset's sorted folder list and reported them correct."""
    data = image_folder(tmp_path / "images", {"Bag": canvases["T-shirt/top"], "Dress": canvases["Trouser"]})
    preds, _ = explain_all(vit, data, tmp_path / "store")
    mislabelled = {"Bag": canvases["T-shirt/top"], "Dress": canvases["Trouser"]}
    assert sum(p["correct"] for p in preds) == hand_count(vit, mislabelled) <= 1


def test_label_map_names_classes_that_cannot_be_folder_names(vit, canvases, tmp_path):
    data = image_folder(tmp_path / "images", {"tshirt": canvases["T-shirt/top"], "Sneaker": canvases["Sneaker"]})
    with pytest.raises(LabelError, match="'tshirt'.*T-shirt/top.*--label-map"):
        plan_run(AuditRequest(model=MODEL, data=data, methods=["rollout"], store=str(tmp_path / "refused")))
    assert not (tmp_path / "refused").exists() or not Store.open(tmp_path / "refused").runs().num_rows
    mapping = {"tshirt": "T-shirt/top"}
    plan = plan_run(AuditRequest(model=MODEL, data=data, methods=["rollout"], store=str(tmp_path / "store"),
                                 label_map=json.dumps(mapping)))
    assert plan.config["label_map"] == mapping  # part of the run key
    preds, errors = explain_all(vit, data, tmp_path / "store", label_map=mapping)
    assert not errors
    assert {p["label"] for p in preds} == {"tshirt", "Sneaker"}
    assert sum(p["correct"] for p in preds) == hand_count(vit, {"T-shirt/top": canvases["T-shirt/top"],
                                                                "Sneaker": canvases["Sneaker"]})


def test_unknown_labels_are_refused_before_any_work_naming_them(tmp_path, canvases):
    data = image_folder(tmp_path / "images", {"Bag": canvases["Bag"][:1], "Hat": canvases["Bag"][:1],
                                              "Scarf": canvases["Bag"][:1]})
    with pytest.raises(LabelError) as refused:
        plan_run(AuditRequest(model=MODEL, data=data, methods=["rollout"], store=str(tmp_path / "store")))
    message = str(refused.value)
    assert "'Hat'" in message and "'Scarf'" in message and "'Bag'" not in message.split("classes")[0]
    assert "8=Bag" in message and "--label-map" in message
    assert not Store.open(tmp_path / "store").runs().num_rows  # nothing stored


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_table_labels_odd_case_reordered_and_integer(vit, canvases, tmp_path, fmt):
    """String labels in any case and spacing, in any order, and integer labels (the model's indices)."""
    rows = []
    for name, label in (("Sneaker", "  sneaker "), ("Bag", "BAG"), ("Trouser", "Trouser")):
        for i, image in enumerate(canvases[name][:2]):
            path = tmp_path / f"{name}-{i}.png"
            Image.fromarray(image).save(path)
            rows.append({"id": f"{name}-{i}", "image": str(path), "label": label})
    rows.reverse()
    int_rows = [{**r, "id": f"int-{r['id']}", "label": CLASS_NAMES.index(r["id"].split("-")[0])} for r in rows]
    for name, table in (("strings", rows), ("integers", int_rows)):
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in table))
        elif fmt == "csv":
            path.write_text("id,image,label\n" + "".join(f"{r['id']},{r['image']},{r['label']}\n" for r in table))
        else:
            pq.write_table(pa.Table.from_pylist(table), path)
        preds, errors = explain_all(vit, f"{fmt}:{path}", tmp_path / f"store-{name}")
        assert not errors and len(preds) == 6
        expected = hand_count(vit, {n: canvases[n][:2] for n in ("Sneaker", "Bag", "Trouser")})
        assert sum(p["correct"] for p in preds) == expected
        if name == "integers":
            assert {p["label"] for p in preds} == {"Sneaker", "Bag", "Trouser"}  # stored by the class's name
        else:
            assert {p["label"] for p in preds} == {"  sneaker ", "BAG", "Trouser"}  # as given


def test_target_label_explains_the_labelled_class_by_name(vit, canvases, tmp_path):
    data = image_folder(tmp_path / "images", {"Bag": canvases["Bag"][:2], "sneaker": canvases["Sneaker"][:2]})
    preds, errors = explain_all(vit, data, tmp_path / "store", target="label")
    assert not errors
    assert {(p["label"], p["target_label"]) for p in preds} == {("Bag", "Bag"), ("sneaker", "Sneaker")}


def test_target_out_of_range_is_refused_at_planning(tmp_path):
    with pytest.raises(models.AttnAuditError, match="--target 99 is out of range.*10 classes"):
        plan_run(AuditRequest(model=MODEL, data="builtin:fashion-canvas", methods=["rollout"], target=99,
                              store=str(tmp_path / "store"), limit=5))


def test_per_sample_targets_count_failed_samples_too(vit, canvases):
    """errors="collect": one target per sample given to preprocess, the failed ones included."""
    samples = [{"id": "a", "image": canvases["Bag"][0]}, {"id": "bad", "image": b"not an image"},
               {"id": "c", "image": canvases["Sneaker"][0]}]
    batch = vit.preprocess(samples, errors="collect")
    assert batch.size == 2 and [f.sample_id for f in batch.failures] == ["bad"]
    exps = models.explain(vit, batch, method="rollout", target=[3, 5, None])
    by_id = {e.sample_id: e for e in exps}
    assert by_id["a"].target == 3 and by_id["bad"].error is not None
    assert by_id["c"].target == by_id["c"].prediction  # None: the predicted class
    assert [e.target for e in models.explain(vit, batch, method="rollout", target=[3, 1])] == [None, 3, 1]
    with pytest.raises(models.AttnAuditError, match="got 4 targets for 3 samples"):
        models.explain(vit, batch, method="rollout", target=[1, 2, 3, 4])
