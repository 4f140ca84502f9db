"""Topology adapters, one small file per model family."""

from models.adapters.base import Adapter, SampleMaps
from models.adapters.captioner import CaptionerAdapter
from models.adapters.causal_lm import CausalLMAdapter
from models.adapters.clip import ClipAdapter
from models.adapters.detr import DetrAdapter
from models.adapters.llava import LlavaAdapter
from models.adapters.lxmert import LxmertVqaAdapter
from models.adapters.seq2seq import Seq2SeqAdapter
from models.adapters.text_classifier import MeanPoolAdapter, TextClassifierAdapter
from models.adapters.visual_bert import VisualBertVqaAdapter
from models.adapters.vit import ViTAdapter
from models.errors import UnsupportedModelError

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
