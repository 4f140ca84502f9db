"""builtin:retrieval-lm's training script: its checkpoint loads with plain transformers and models.load, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from attn_audit.storage.datasets import open_dataset
from attn_audit.tasks.evaluate.localisation_job import localisation_rows
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import metric_rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from transformers import AutoModelForCausalLM, AutoTokenizer

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def exact_answers(folder: Path, ref: str) -> float:
    """Share of prompts whose greedy continuation (the checkpoint's generation config) is the answer, then EOS."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    samples = list(open_dataset(ref))
    batch = tok([s["text"] for s in samples], return_tensors="pt", padding=True)
    with torch.inference_mode():
        new = model.generate(**batch)[:, batch["input_ids"].shape[1]:]
    said = tok.batch_decode(new)
    return sum(text.split() == [s["label"], tok.eos_token] for text, s in zip(said, samples)) / len(samples)


def test_training_script_smoke_run_makes_a_loadable_explainable_checkpoint(tmp_path):
    """The script's --smoke run (a few steps: it learns nothing yet) writes a small stock Llama with a left-padding
    word-level tokenizer and a generation config, which plain transformers and models.load both read offline.
    (No trained retrieval-lm ships yet: see the README's built-in table.)"""
    run_smoke("train_retrieval_lm.py", tmp_path)
    exact_answers(tmp_path, "builtin:kv-retrieval?n=4")
    assert json.loads((tmp_path / "training.json").read_text())["test"] == "builtin:kv-retrieval?split=test&n=32&seed=0"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and (tmp_path / "model.safetensors").stat().st_size < 4 << 20
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 2 and generation["eos_token_id"] == config["eos_token_id"]
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok(["k1=v2 ; k1 ?", "k3=v7 k1=v2 ; k1 ?"], padding=True)["input_ids"]
    assert tok.padding_side == "left" and ids[0][:1] == [tok.pad_token_id] and ids[1][0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids[0][1:]) == ["<s>", "k1=v2", ";", "k1", "?"]

    m = models.load(str(tmp_path), device="cpu")
    sample = next(iter(open_dataset("builtin:kv-retrieval?n=1")))
    forced = {"id": sample["id"], "text": sample["text"], "target": sample["label"]}  # it has learned nothing yet
    (first, *_) = models.explain(m, m.preprocess([forced]), "chefer2021")
    n_words = len(sample["text"].split())
    assert first.error is None and first.tokens["text"][1:n_words + 1] == sample["text"].split()

    # The evaluation scores a generated token's map on the prompt's words against the queried pair.
    metrics, notes = metric_rows(), Notes()
    localisation_rows({sample["id"]: sample}, [first], "chefer2021", EvalSettings(), metrics, notes)
    got = {name: value for name, value in zip(metrics.columns["metric"], metrics.columns["value"])}
    assert not notes and {"auprc", "pointing_game", "bmeq_otsu"} <= set(got)


def test_shipped_checkpoint_answers_held_out_prompts_and_its_maps_find_the_queried_pair():
    """builtin:retrieval-lm answers held-out test prompts (2–12 pairs) exactly, and chefer2021's map of its answer
    token puts the queried pair among the prompt's most relevant words far more often than chance would."""
    folder = ROOT / "models/zoo/retrieval-lm"
    assert exact_answers(folder, "builtin:kv-retrieval?n=300&seed=5") >= 0.95
    assert json.loads((folder / "training.json").read_text())["test_exact_answers"] >= 0.95

    m = models.load("builtin:retrieval-lm", device="cpu")
    samples = list(open_dataset("builtin:kv-retrieval?n=40&seed=7"))
    exps = models.explain(m, m.preprocess([{"id": s["id"], "text": s["text"]} for s in samples]), "chefer2021")
    answers = [e for e in exps if e.target == 0]
    assert len(answers) == len(samples) and all(e.error is None for e in answers)
    hits = 0
    for s, e in zip(samples, answers):
        assert json.loads(e.target_detail)["token"] == s["label"]
        pair = s["ground_truth"]["text_tokens"][0] + 1  # after <s>
        prompt = e.relevance["text"][1:len(s["text"].split()) + 1]
        hits += int(prompt.argsort()[::-1][:2].tolist().count(pair - 1) == 1)
    assert hits >= 0.8 * len(samples)  # chance: 2 of 5–15 words
