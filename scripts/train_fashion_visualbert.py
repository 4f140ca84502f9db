"""Train builtin:fashion-visualbert: a small stock VisualBertForQuestionAnswering on fashion-vqa.

Regions are the four 28x28 cells of the 2x2 canvas; VisualBERT takes no boxes, so each region's features are
its pixels followed by its box (regions.json: box_features). Seeded, one CPU thread. Writes the checkpoint
folder (safetensors, word-level vocab, regions.json) and training.json with the held-out test accuracy
(grids of Fashion-MNIST *test* items).

    python scripts/train_fashion_visualbert.py --fresh-data      # full run, writes models/zoo/fashion-visualbert
    python scripts/train_fashion_visualbert.py --smoke --out /tmp/vb   # a few steps, for tests
"""

from __future__ import annotations

import transformers
from attn_audit.models.regions import RegionGrid
from vqa_training import CANVAS, GRID, INIT, main


def build_model(vocab_size: int, labels: list[str], feature_dim: int) -> transformers.VisualBertForQuestionAnswering:
    config = transformers.VisualBertConfig(
        vocab_size=vocab_size, hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
        max_position_embeddings=16, visual_embedding_dim=feature_dim, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=INIT, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    return transformers.VisualBertForQuestionAnswering(config)


if __name__ == "__main__":
    main(__doc__, "fashion-visualbert", build_model, RegionGrid(GRID, CANVAS, box_features=True))
