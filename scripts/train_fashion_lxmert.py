"""Train builtin:fashion-lxmert: a small stock LxmertForQuestionAnswering on fashion-vqa.

Regions are the four 28x28 cells of the 2x2 canvas: features = the cell's pixels, positions = its box
(regions.json). Seeded, one CPU thread. Writes the checkpoint folder (safetensors, word-level vocab,
regions.json) and training.json with the held-out test accuracy (grids of Fashion-MNIST *test* items).

    python scripts/train_fashion_lxmert.py --fresh-data           # full run, writes models/zoo/fashion-lxmert
    python scripts/train_fashion_lxmert.py --smoke --out /tmp/lx   # a few steps, for tests
"""

from __future__ import annotations

import transformers
from attn_audit.models.regions import RegionGrid
from vqa_training import CANVAS, GRID, INIT, main


def build_model(vocab_size: int, labels: list[str], feature_dim: int) -> transformers.LxmertForQuestionAnswering:
    config = transformers.LxmertConfig(
        vocab_size=vocab_size, hidden_size=64, num_attention_heads=4, intermediate_size=128, l_layers=1,
        r_layers=1, x_layers=2, max_position_embeddings=16, visual_feat_dim=feature_dim, visual_pos_dim=4,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=INIT, num_qa_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return transformers.LxmertForQuestionAnswering(config)


if __name__ == "__main__":
    main(__doc__, "fashion-lxmert", build_model, RegionGrid(GRID, CANVAS))
