"""Topology adapters, one small file per model family."""

from attn_audit.models.adapters.base import Adapter, SampleMaps
from attn_audit.models.adapters.captioner import CaptionerAdapter
from attn_audit.models.adapters.causal_lm import CausalLMAdapter
from attn_audit.models.adapters.clip import ClipAdapter
from attn_audit.models.adapters.detr import DetrAdapter
from attn_audit.models.adapters.llava import LlavaAdapter
from attn_audit.models.adapters.lxmert import LxmertVqaAdapter
from attn_audit.models.adapters.seq2seq import Seq2SeqAdapter
from attn_audit.models.adapters.text_classifier import MeanPoolAdapter, TextClassifierAdapter
from attn_audit.models.adapters.visual_bert import VisualBertVqaAdapter
from attn_audit.models.adapters.vit import ViTAdapter
from attn_audit.models.errors import UnsupportedModelError

ADAPTERS: tuple[type[Adapter], ...] = (ViTAdapter, TextClassifierAdapter, MeanPoolAdapter, LxmertVqaAdapter,
                                       VisualBertVqaAdapter, DetrAdapter, CaptionerAdapter, Seq2SeqAdapter,
                                       ClipAdapter, CausalLMAdapter, LlavaAdapter)


def supported_families() -> str:
    return "; ".join(f"{a.family}: {', '.join(a.architectures)}" for a in ADAPTERS)


def adapter_class(architecture: str) -> type[Adapter]:
    for adapter in ADAPTERS:
        if architecture in adapter.architectures:
            return adapter
    raise UnsupportedModelError(
        f"model class {architecture!r} is not supported; supported families — {supported_families()}")


__all__ = ["ADAPTERS", "Adapter", "SampleMaps", "adapter_class", "supported_families"]
