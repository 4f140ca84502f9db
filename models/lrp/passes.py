"""The passes of the LRP family inside the explain driver: the Chefer-rule reverse pass over a recorded eager
capture (`relevance_of_record`), and a forward + backward of its own under AttnLRP / CP-LRP's modified gradient
(`modified_pass`), for the targets the driver's first pass chose."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from attn_audit.models.adapters.base import Adapter
from attn_audit.models.adapters.clip import ClipAdapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.batch import Batch
from attn_audit.models.capture import autocast, gradient_path
from attn_audit.models.errors import UnsupportedModelError
from attn_audit.models.lrp.modified_gradient import first_blocks, token_relevance
from attn_audit.models.lrp.record import LRPRecord
from attn_audit.models.lrp.relprop import Relevance, clip_pair_start, relprop

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def split_need(need: str) -> tuple[str, str]:
    """"lrp:ours:float64" -> ("lrp:ours", "float64"); "attnlrp:float32" -> ("attnlrp", "float32")."""
    kind, _, dtype = need.rpartition(":")
    return kind, dtype


def relevance_of_record(rec: LRPRecord, adapter: Adapter, targets: Targets, need: str) -> Relevance:
    """relprop from the one-hot rows of the targets' classes (SPEC_LRP L2.5: e_t, not the logit); CLIP pairs start
    from the similarity's per-dimension shares (models/lrp/relprop.py)."""
    kind, dtype = split_need(need)
    if isinstance(adapter, ClipAdapter):
        start = clip_pair_start(rec, DTYPES[dtype])
    else:
        start = torch.nn.functional.one_hot(targets.score_index, adapter.model.config.num_labels).to(DTYPES[dtype])
    return relprop(rec, start, rules=kind.split(":")[1], dtype=DTYPES[dtype])


@dataclass
class ModifiedRelevance:
    relevance: dict[str, torch.Tensor]  # modality -> (T, n) at the hidden states entering its tower's first block
    conservation: torch.Tensor  # (T,) |Σ R − score| / |score|


def modified_pass(adapter: Adapter, batch: Batch, targets: Targets, need: str, precision: str) -> ModifiedRelevance:
    """One forward + backward under the rule of `need`, per target: one per sample, or (decoder-only LMs) one
    backward per generated-token column (`Adapter.modified_scores`)."""
    rule, dtype = split_need(need)
    entries = _entries(adapter)
    with gradient_path(adapter.model, adapter.gradient_roots(), adapter.gradient_root_parameters()), \
            promoted(adapter.model, DTYPES[dtype]), \
            autocast(next(adapter.model.parameters()).device, precision if dtype == "float32" else "float32"):
        result = token_relevance(adapter.model, rule, lambda: adapter.modified_scores(batch, targets, DTYPES[dtype]),
                                 entries)
    relevance, gap = result.relevance, result.conservation
    if gap.dim() == 2:  # (B, K): each target's column
        at = targets.sample, torch.as_tensor(targets.index, dtype=torch.long, device=gap.device)
        relevance, gap = {m: r[at] for m, r in relevance.items()}, gap[at]
    return ModifiedRelevance({m: r.float() if dtype == "float32" else r for m, r in relevance.items()}, gap)


def _entries(adapter: Adapter) -> dict[str, torch.nn.Module]:
    """Modality -> the first block of its tower."""
    blocks = first_blocks(adapter.model)
    if len(blocks) == 1 and len(adapter.modalities) == 1:
        return {adapter.modalities[0]: next(iter(blocks.values()))}
    named = {m: [b for name, b in blocks.items() if ("vision" if m == "image" else m) in name]
             for m in adapter.modalities}
    if any(len(found) != 1 for found in named.values()):
        raise UnsupportedModelError(f"{adapter.family}: cannot tell which layer stack reads which modality "
                                    f"({', '.join(blocks)})")
    return {m: found[0] for m, found in named.items()}


@contextmanager
def promoted(model: torch.nn.Module, dtype: torch.dtype):
    """The model's floating parameters and buffers in `dtype` inside (float64: the check on float32 LRP); their own
    dtypes back on exit (float32 → float64 → float32 is exact)."""
    if dtype == torch.float32:
        yield
        return
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    was = [t.dtype for t in tensors]
    for t in tensors:
        t.data = t.data.to(dtype)
    try:
        yield
    finally:
        for t, d in zip(tensors, was):
            t.data = t.data.to(d)
