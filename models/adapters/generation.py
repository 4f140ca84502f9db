"""Encoder–decoder generators (captioning, text seq2seq): one target per generated token.

`run` generates greedily (model.generate, no gradient), then teacher-forces the generated sequence in one
forward pass whose attention maps are captured: encoder self-attention (Eq. 6), decoder self-attention over
the generated tokens (Eqs. 6–7) and decoder→encoder cross-attention (Eq. 10). The logit at decoder position
k − 1 scored generated token k, so token k is explained by row k − 1 of R (SPEC §1.1, §1.8).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar

import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.errors import UnsupportedModelError


class GenerationAdapter(MultiTargetAdapter):
    source: ClassVar[str]  # modality of the encoder tokens
    target: ClassVar[str]  # modality of the decoder tokens (the generated sequence)

    def __init__(self, model, tokenizer=None, max_new_tokens: int | None = None, **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer (the checkpoint folder has none)")
        self.tokenizer = tokenizer
        config = model.generation_config
        self.max_new_tokens = max_new_tokens or config.max_new_tokens or config.max_length
        eos = config.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])  # some checkpoints end on any of several

    def gradient_roots(self):
        # Encoder and decoder embed separately (tied weights, distinct modules): both start the graph.
        return [self.model.get_encoder().get_input_embeddings(), self.model.get_decoder().get_input_embeddings()]

    # -- what the encoder side of a family needs
    def encoder_inputs(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def removable_source(self, batch) -> torch.Tensor:
        """bool (B, n): the encoder tokens (map positions) a perturbation test may remove."""
        raise NotImplementedError

    def perturbed_encoder(self, batch, rows, keep, mode, forward) -> torch.Tensor:
        """`forward(sel, **encoder_inputs)` for the rows `sel` of `rows`, on their encoder inputs with only the
        map positions `keep` left; the outputs of all rows in order."""
        raise NotImplementedError

    def source_mask(self, batch, n_source: int) -> torch.Tensor:
        raise NotImplementedError

    def source_maps(self, row, batch, i: int) -> SampleMaps:
        raise NotImplementedError

    @property
    def label_names(self):
        return None  # targets are vocabulary tokens, not classes

    def generate(self, batch) -> torch.Tensor:
        """Greedy generation (no gradient); the sequences, their lengths and whether they ended go to batch.meta."""
        with torch.no_grad():
            generated = self.model.generate(**self.encoder_inputs(batch), do_sample=False, num_beams=1,
                                            max_new_tokens=self.max_new_tokens)
        # Decoder positions up to the end token are real; generate pads the finished sequences after it.
        is_end = torch.isin(generated, torch.tensor(self.eos, dtype=generated.dtype, device=generated.device))
        is_end[:, 0] = False  # position 0 is the start token (T5 starts with its padding id)
        ended = is_end.any(1)
        length = torch.where(ended, is_end.int().argmax(1), generated.shape[1])  # tokens before the end token
        batch.meta["generated"], batch.meta["length"], batch.meta["ended"] = generated, length, ended
        return generated

    def run(self, batch):
        inputs = self.encoder_inputs(batch)
        generated = self.generate(batch)
        out = self.model(**inputs, decoder_input_ids=generated[:, :-1], output_attentions=True)
        events = [AttentionEvent("self", self.source, self.source, layer, a)
                  for layer, a in enumerate(out.encoder_attentions)]
        block = len(events)
        for self_attn, cross in zip(out.decoder_attentions, out.cross_attentions):
            events += [AttentionEvent("self", self.target, self.target, block, self_attn),
                       AttentionEvent("cross", self.target, self.source, block + 1, cross)]
            block += 2
        n_target, n_source = out.cross_attentions[0].shape[-2:]
        real = torch.arange(n_target, device=generated.device)[None] < batch.meta["length"][:, None]
        masks = {self.source: self.source_mask(batch, n_source), self.target: real}
        return out.logits, Capture(events, masks, {})

    def own_targets(self, batch, logits):
        """Every generated token that is not special (start, end, padding), in order."""
        generated, length = batch.meta["generated"], batch.meta["length"]
        special = torch.tensor(self.tokenizer.all_special_ids, device=generated.device)
        positions = torch.arange(generated.shape[1], device=generated.device)
        keep = (positions[None] >= 1) & (positions[None] < length[:, None]) & ~torch.isin(generated, special)
        sample, position = keep.nonzero(as_tuple=True)
        token = generated[sample, position]
        n_decoder, vocab = logits.shape[1:]
        readout = Readout.token(self.target, position - 1, n_decoder, len(position), device=logits.device)
        texts = self.tokenizer.convert_ids_to_tokens(token.tolist())
        captions = [self.tokenizer.decode(g[1:n], skip_special_tokens=True)
                    for g, n in zip(generated.tolist(), length.tolist())]
        details = [{"position": p - 1, "token": text, "token_id": tok, "generated": captions[b]}
                   for b, p, tok, text in zip(sample.tolist(), position.tolist(), token.tolist(), texts)]
        notes = {i: f"generation hit the length limit ({self.max_new_tokens} new tokens) before the end token"
                 for i, ended in enumerate(batch.meta["ended"].tolist()) if not ended}
        notes |= {i: "nothing to explain: the model generated no token before its end token"
                  for i in range(generated.shape[0]) if i not in notes and not (sample == i).any()}
        return Targets(sample, (position - 1) * vocab + token, {self.source: readout, self.target: readout},
                       (position - 1).tolist(), texts, token.tolist(), details, notes)

    def target_maps(self, rows, batch, targets, t):
        i, row = int(targets.sample[t]), targets.index[t]  # the readout row: generated token `row` + 1
        maps = self.source_maps(rows[self.source][t], batch, i)
        ids = batch.meta["generated"][i, :row + 1].tolist()
        maps.relevance[self.target] = rows[self.target][t][:row + 1]
        maps.tokens[self.target] = self.tokenizer.convert_ids_to_tokens(ids)
        maps.special[self.target] = torch.isin(torch.tensor(ids), torch.tensor(self.tokenizer.all_special_ids)).numpy()
        return maps

    # -- perturbation over the encoder tokens (SPEC §3): the generated sequence stays teacher-forced, and each
    # target token is scored at its own decoder position
    @property
    def perturbable_modalities(self):
        return (self.source,)

    def removable_tokens(self, batch, modality):
        self._require_source(modality)
        return self.removable_source(batch)

    @contextmanager
    def perturbing(self, batch):
        """The sequences to teacher-force are generated here, before the passes (which may run another attention
        kernel: greedy decoding there could break a near-tie the other way than the explanation did)."""
        if "generated" not in batch.meta:
            self.generate(batch)
        yield

    def perturbed_logits(self, batch, rows, keep, modality, mode, positions):
        self._require_source(modality)
        generated = batch.meta["generated"] if "generated" in batch.meta else self.generate(batch)
        decoder = generated[rows, :-1]
        head = self.model.get_output_embeddings()

        def forward(sel, **encoder_inputs):
            at = positions[sel]
            with _scores_at(head, at):  # the decoder is causal: the tokens after the last target do not matter
                return self.model(**encoder_inputs, decoder_input_ids=decoder[sel, :int(at.max()) + 1]).logits[:, 0]

        return self.perturbed_encoder(batch, rows, keep, mode, forward)

    def _require_source(self, modality):
        if modality != self.source:
            raise UnsupportedModelError(f"{self.family} perturbation tests remove {self.source!r} (encoder) tokens; "
                                        f"{modality!r} tokens are the generated sequence")


@contextmanager
def _scores_at(head: torch.nn.Module, positions: torch.Tensor):
    """While active, the output head scores only decoder position `positions[r]` of row r, so a pass over long
    sequences and a large vocabulary returns (R, 1, vocab), not (R, length, vocab)."""
    def take(_module, args):
        hidden = args[0]
        return (hidden[torch.arange(len(positions), device=hidden.device), positions][:, None], *args[1:])

    handle = head.register_forward_pre_hook(take)
    try:
        yield
    finally:
        handle.remove()
