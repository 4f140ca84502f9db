"""LXMERT VQA: two streams with co-attention (SPEC §1.7, two-stream).

Event order is the model's: language self-attention layers, vision self-attention layers, then per
cross-modality layer one block with both cross-attention directions (text→image, image→text: both read the
pre-block state) and one block with both streams' self-attention. The stock model returns only the
text→image maps of its cross layers; hooks on the attention modules record every call of a cross layer
(the shared cross-attention module runs twice, text queries first) and are removed on every path.
Readout: the [CLS] row of R^tt and R^ti (the pooler reads [CLS]).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from attn_audit.models.adapters.region_vqa import RegionVqaAdapter
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout


class LxmertVqaAdapter(RegionVqaAdapter):
    family = "lxmert"
    architectures = ("LxmertForQuestionAnswering",)

    def __init__(self, model, **resources):
        self.feature_dim = int(model.config.visual_feat_dim)
        if model.config.num_labels != model.config.num_qa_labels:  # the answer head's size is num_qa_labels
            model.config.num_labels = model.config.num_qa_labels
        super().__init__(model, **resources)

    score_name = "question_answering_score"

    def forward(self, inputs, **kwargs):
        return self.model(**self.text_inputs(inputs), visual_feats=inputs["region_features"],
                          visual_pos=inputs["region_boxes"], visual_attention_mask=inputs["region_mask"], **kwargs)

    def run(self, batch):
        x_layers = self.model.lxmert.encoder.x_layers
        with record_attention([m for x in x_layers for m in
                               (x.visual_attention.att, x.lang_self_att.self, x.visn_self_att.self)]) as calls:
            out = self.forward(self.graph_inputs(batch), output_attentions=True)
        events = [AttentionEvent("self", "text", "text", b, a) for b, a in enumerate(out.language_attentions)]
        events += [AttentionEvent("self", "image", "image", len(events) + b, a)
                   for b, a in enumerate(out.vision_attentions)]
        for x in x_layers:
            to_image, to_text = calls[x.visual_attention.att]
            block = len(events)
            events += [AttentionEvent("cross", "text", "image", block, to_image),
                       AttentionEvent("cross", "image", "text", block, to_text),
                       AttentionEvent("self", "text", "text", block + 1, calls[x.lang_self_att.self][0]),
                       AttentionEvent("self", "image", "image", block + 1, calls[x.visn_self_att.self][0])]
        text_mask = batch["attention_mask"].bool()
        b, n = text_mask.shape
        cls = Readout.token("text", 0, n, b, device=text_mask.device)
        masks = {"text": text_mask, "image": batch["region_mask"].bool()}
        return out.question_answering_score, Capture(events, masks, {"text": cls, "image": cls})


@contextmanager
def record_attention(modules: list[torch.nn.Module]):
    """While active, each LxmertAttention in `modules` also computes its probabilities where its caller did not
    ask for them; they are collected per module in call order. Callers still get exactly what they asked for."""
    calls: dict[torch.nn.Module, list[torch.Tensor]] = {m: [] for m in modules}
    asked: list[bool] = []

    def before(_module, args, kwargs):
        asked.append(bool(kwargs.get("output_attentions", False)))
        return args, {**kwargs, "output_attentions": True}

    def after(module, _args, _kwargs, output):
        calls[module].append(output[1])
        return output if asked.pop() else output[:1]

    handles = [h for m in modules for h in (m.register_forward_pre_hook(before, with_kwargs=True),
                                            m.register_forward_hook(after, with_kwargs=True))]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
