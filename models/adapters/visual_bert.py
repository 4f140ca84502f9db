"""VisualBERT VQA: one joint stream of question tokens then region tokens (SPEC §1.7, single stream).

Eq. 6 runs over the joint sequence (the engine sees one modality, `joint`); the readout is the token the
stock VQA head pools — the last question token before [SEP] (`attention_mask.sum(1) - 2`) — and its row is
split into the text and image maps.
"""

from __future__ import annotations

import torch
from attn_audit.models.adapters.region_vqa import RegionVqaAdapter
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout


class VisualBertVqaAdapter(RegionVqaAdapter):
    family = "visual-bert"
    architectures = ("VisualBertForQuestionAnswering",)

    def __init__(self, model, **resources):
        self.feature_dim = int(model.config.visual_embedding_dim)
        super().__init__(model, **resources)

    def pooled_index(self, attention_mask):
        return attention_mask.sum(1) - 2

    score_name = "logits"

    def forward(self, inputs, **kwargs):
        # VisualBERT takes no boxes: a checkpoint that needs positions has them inside its features
        return self.model(**self.text_inputs(inputs), visual_embeds=inputs["region_features"],
                          visual_attention_mask=inputs["region_mask"], **kwargs)

    def run(self, batch):
        out = self.forward(self.graph_inputs(batch), output_attentions=True)
        text_mask = batch["attention_mask"].bool()
        joint = torch.cat([text_mask, batch["region_mask"].bool()], 1)
        events = [AttentionEvent("self", "joint", "joint", layer, a) for layer, a in enumerate(out.attentions)]
        readout = Readout.token("joint", self.pooled_index(batch["attention_mask"]), joint.shape[1],
                                joint.shape[0], device=joint.device)
        return out.logits, Capture(events, {"joint": joint}, {"joint": readout})

    def split_row(self, row, batch):
        n_text = batch["attention_mask"].shape[1]
        return {"text": row["joint"][:n_text], "image": row["joint"][n_text:]}
