"""Example heatmaps for the report: per method, the samples it explains best and worst by one per-sample metric
(positive-perturbation probability AUC, else AUPRC). Image maps are drawn by matplotlib over the input (a detection's
box outlined), text maps inline as coloured tokens; every example says the true label, the prediction and which
target its map explains."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from attn_audit.storage.datasets import DatasetError, SampleError, open_dataset
from attn_audit.storage.store import Store, render
from attn_audit.tasks.evaluate.specs import metric_spec

RANKING_METRICS = ("prob_auc_positive", "prob_auc_positive_zero", "auprc")


@dataclass
class Example:
    method: str
    sample_id: str
    kind: str  # best | worst
    metric: str
    value: float
    caption: str = ""
    file: str | None = None  # an image, relative to the report folder
    markup: str | None = None  # coloured text, inlined in the page


def pick(store: Store, run_id: str, methods: list[str], per_side: int = 1) -> list[tuple[str, str, str, str, float]]:
    """[(method, sample_id, best|worst, metric, value)] by the first ranking metric the run has."""
    table = store.metrics(run_id=run_id)
    table = table.filter(pc.is_valid(table["sample_id"]))
    for metric in RANKING_METRICS:
        rows = [r for r in table.filter(pc.equal(table["metric"], metric)).to_pylist() if r["modality"] != "combined"]
        if not rows:
            continue
        better_high = metric_spec(metric).higher_is_better
        out = []
        for method in methods:
            values = {r["sample_id"]: r["value"] for r in rows if r["method"] == method}
            ordered = sorted(values, key=lambda s: (values[s], s), reverse=better_high)
            for kind, ids in (("best", ordered[:per_side]), ("worst", ordered[::-1][:per_side])):
                out += [(method, sid, kind, metric, values[sid]) for sid in ids]
        return out
    return []


def draw(store: Store, run_id: str, out: Path, per_side: int = 1) -> list[Example]:
    """Render the picked examples into `out/examples/`; returns what was written."""
    run = store.run(run_id)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    names = label_names(run.dataset_ref)
    examples = []
    for method, sid, kind, metric, value in pick(store, run.run_id, run.methods, per_side):
        exps = sorted(store.load_explanations(run.run_id, method=method, sample_ids=[sid]), key=lambda e: e.target)
        if not exps:
            continue
        exp, stem = exps[0], f"examples/{method}-{kind}-{file_safe(sid)}"
        example = Example(method, sid, kind, metric, value,
                          f"{method} · {kind} by {metric} = {value:.2f} · sample {sid} · {describe(exp, names)}")
        if "image" in exp.relevance:
            render.save_panels(out / f"{stem}.png", sample_image(store, run, sid), [(method, exp.relevance["image"])],
                               boxes=_boxes(exp))
            example.file = f"{stem}.png"
        if "text" in exp.relevance:
            example.markup = text_markup(exps)
        examples.append(example)
    return examples


def label_names(dataset_ref: str) -> list[str] | None:
    """The dataset's class names, to name a stored label index; None when it has none or cannot be opened."""
    try:
        return getattr(open_dataset(dataset_ref), "label_names", None)
    except (DatasetError, OSError, ValueError):
        return None


def describe(exp, names: list[str] | None = None) -> str:
    """What the map explains and how the model did: the true label (by name), the prediction, the target (a
    detection's query and class, a generated token)."""
    detail = json.loads(exp.target_detail) if exp.target_detail else {}
    if "query" in detail:
        target = f"query {detail['query']}: {detail.get('label') or detail.get('class')} (p {exp.probability:.2f})"
    elif "token" in detail:
        said = detail.get("continuation", detail.get("generated", ""))  # decoder-only LMs / encoder–decoders
        target = f"generated {said!r}; map of token {exp.target} {detail['token']!r}"
    elif exp.prediction is None or exp.prediction == exp.target:
        target = f"predicted {exp.target_label or exp.target} (p {exp.probability:.2f})"
    else:
        target = f"map of {exp.target_label or exp.target} (p {exp.probability:.2f}); predicted class {exp.prediction}"
    label = exp.label
    if names and isinstance(label, str) and label.isdigit() and int(label) < len(names):
        label = names[int(label)]
    return f"{'no label' if label is None else f'true: {label}'} · {target}"


def _boxes(exp) -> list[tuple[float, float, float, float]]:
    detail = json.loads(exp.target_detail) if exp.target_detail else {}
    return [tuple(detail["box"])] if "box" in detail else []


def text_markup(exps) -> str:
    """A sample's text maps as coloured tokens: one line per generated token (the token each map explains, in
    generation order), or the sample's one map."""
    lines = []
    for exp in exps:
        detail = json.loads(exp.target_detail) if exp.target_detail else {}
        generated = "token" in detail and "position" in detail
        lines.append(render.tokens_markup(exp.tokens.get("text") or [], exp.relevance["text"],
                                          exp.special.get("text"), detail["token"] if generated else None))
    return "".join(lines)


def sample_image(store: Store, run, sample_id: str):
    """The input image from the run's dataset (searched in the sample's shard), or None."""
    shard = store.sample_shard(run.run_id, sample_id)
    try:
        dataset = open_dataset(run.dataset_ref)
        for i in range(*(shard or (0, 0))):
            if dataset.sample_id(i) == sample_id:
                return render.to_image(dataset[i]["image"])
    except (DatasetError, SampleError, KeyError, OSError, ValueError):
        return None
    return None


def file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]
