"""A stock Hugging Face encoder used as a classifier: mean pooling plus a linear head.

Sentence-embedding models (e.g. all-MiniLM-L6-v2) ship without a classification head; this wraps
the unmodified encoder, so attention capture works on the stock model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

HEAD_CONFIG = "attn_audit_head.json"
HEAD_WEIGHTS = "attn_audit_head.safetensors"


@dataclass
class PooledOutput:
    logits: torch.Tensor
    attentions: tuple[torch.Tensor, ...]


class MeanPoolingClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, normalize: bool = True,
                 labels: list[str] | None = None):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        if labels:
            self.config.id2label = dict(enumerate(labels))
            self.config.label2id = {name: i for i, name in enumerate(labels)}
        self.config.num_labels = num_labels
        self.normalize = normalize
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward(self, input_ids, attention_mask, output_attentions: bool = False, **kwargs) -> PooledOutput:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_attentions=output_attentions, **kwargs)
        return PooledOutput(self.head(self.pool(out.last_hidden_state, attention_mask)), out.attentions)
