"""builtin:fashion-llava: its training script writes a stock LLaVA checkpoint that plain transformers and models.load
read offline, and the shipped model answers held-out fashion-vqa questions as generated words, its answer maps
pointing at the asked-about cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.datasets.fashion.vqa import ANSWER_VOCAB
from attn_audit.tasks.evaluate.localisation_job import localisation_rows
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import metric_rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MIN_EXACT = 0.85  # issue 16's bound
HELD_OUT = 600  # grids of Fashion-MNIST *test* items, another seed than training's test set


def answers(m, samples: list[dict]) -> list[str]:
    """Each sample's generated continuation (through attn-audit: its prompt layout, generation and stop tokens)."""
    said = {}
    for e in models.explain(m, m.preprocess(samples), "raw_attention"):
        assert e.error is None, e.error
        said[e.sample_id] = json.loads(e.target_detail)["continuation"]
    return [said.get(s["id"], "") for s in samples]


def test_training_script_smoke_run_makes_a_loadable_explainable_checkpoint(tmp_path):
    """The --smoke run (a few steps: it learns nothing yet) writes a stock LlavaForConditionalGeneration whose tower
    is fashion-clip's, a word-level tokenizer with the image placeholder, and a generation config; a forced answer is
    explained on the 4x4 patch grid and the question's words, and both maps are scored against the ground truth."""
    run_smoke("train_fashion_llava.py", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert (tmp_path / "model.safetensors").stat().st_size < 4 << 20
    plain = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok("<image><image>\nwhat is in the top left")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "<image>", "<image>", "what", "is", "in", "the", "top", "left"]
    assert plain.config.image_token_id == tok.convert_tokens_to_ids("<image>") and tok.padding_side == "left"

    m = models.load(str(tmp_path), device="cpu")
    sample = next(iter(open_dataset("builtin:fashion-vqa?n=1")))
    forced = {**sample, "target": ANSWER_VOCAB[sample["label"]]}
    first = models.explain(m, m.preprocess([forced]), "chefer2021")[0]
    assert first.error is None and first.relevance["image"].shape == (4, 4)
    assert first.tokens["text"] == ["<s>", *sample["text"].split()]

    metrics, notes = metric_rows(), Notes()
    localisation_rows({sample["id"]: sample}, [first], "chefer2021", EvalSettings(), metrics, notes)
    scored = set(zip(metrics.columns["modality"], metrics.columns["metric"]))
    assert not notes and {("image", "auprc"), ("text", "auprc"), ("image", "pointing_game")} <= scored


def test_shipped_checkpoint_answers_held_out_questions_and_its_maps_point_at_the_asked_cell():
    folder = ROOT / "models/zoo/fashion-llava"
    assert json.loads((folder / "training.json").read_text())["test_exact_answers"] >= MIN_EXACT
    m = models.load("builtin:fashion-llava", device="cpu")
    samples = list(open_dataset(f"builtin:fashion-vqa?n={HELD_OUT}&seed=7"))
    said = answers(m, samples)
    assert np.mean([a == ANSWER_VOCAB[s["label"]] for a, s in zip(said, samples)]) >= MIN_EXACT

    # "what is in the <cell>": chefer2021's image map of the answer word peaks inside the asked-about cell
    asked = [s for s in samples[:80] if s["text"].startswith("what")]
    exps = {e.sample_id: e for e in models.explain(m, m.preprocess(asked), "chefer2021") if e.target == 0}
    hits = 0
    for s in asked:
        image = exps[s["id"]].relevance["image"]  # 4x4 patches, 2x2 per cell
        row, col = np.unravel_index(image.argmax(), image.shape)
        hits += int(2 * (row // 2) + col // 2 == s["ground_truth"]["cells"][0])
    assert hits >= 0.7 * len(asked)  # chance: 1 in 4
