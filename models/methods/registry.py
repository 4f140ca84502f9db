"""Methods register by name and declare what they need (inseq-style registry, Captum-style call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from attn_audit.models.engine.events import AttentionEvent, Capture
from attn_audit.models.engine.fused import BACKWARD_STATS
from attn_audit.models.engine.rules import mask_pairs
from attn_audit.models.errors import AttnAuditError, UnsupportedModelError

# Needs of the LRP family that take a backward pass: per-head eager ∂y/∂A, and the modified-gradient rules
GRADIENT_NEEDS = ("attention_gradient", "attnlrp", "cp_lrp")

_REGISTRY: dict[str, type[Method]] = {}


@dataclass(frozen=True)
class Param:
    """A method parameter: its type, default and a one-line help."""

    kind: type  # int | float | bool | str
    default: object
    help: str
    choices: tuple = ()  # the allowed values, when only a few are

    def parse(self, method: str, key: str, value):
        """A value given in Python or as CLI text, checked against the type."""
        if isinstance(value, str) and self.kind is not str:
            text = value.strip().lower()
            if self.kind is bool and text in ("true", "false", "1", "0", "yes", "no"):
                return text in ("true", "1", "yes")
            try:
                value = self.kind(text)
            except ValueError:
                raise AttnAuditError(f"method {method}: {key}={value!r} is not a {self.kind.__name__}") from None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) is not (self.kind is bool) or not isinstance(value, self.kind):
            raise AttnAuditError(f"method {method}: {key} must be a {self.kind.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise AttnAuditError(f"method {method}: {key} must be one of {', '.join(map(str, self.choices))}, "
                                 f"got {value!r}")
        return value


class Method:
    """A relevancy method: `attribute(capture)` -> {reported modality: (B, n) readout row}.

    Rows are raw; the explain driver zeroes padding and the readout token's own entry. A method may take
    parameters (`params`); a configured instance is named by its `spec`, `name:key=value,...` with the values
    that differ from the defaults — the name it has in the store, the run key and the CLI.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # What the method reads from each attention layer (models/engine/fused.py): "mean" (mean_h A), and from the
    # backward pass "gradient_weighted" (mean_h (A ⊙ ∇A)⁺) and "gradcam". The capture computes their union.
    needs: ClassVar[frozenset[str]]
    needs_gradients: ClassVar[bool]  # derived from `needs`
    params: ClassVar[dict[str, Param]] = {}
    # The adapter families it runs on (None: every family); others are refused naming the methods they have.
    families: ClassVar[frozenset[str] | None] = None
    # Its readout row starts from the readout weights (R = I + …): a content readout's own entry drops that identity
    identity: ClassVar[bool] = False

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            known = ", ".join(f"{k} ({p.kind.__name__}, default {p.default!r}: {p.help})"
                              for k, p in self.params.items()) or "none"
            raise AttnAuditError(f"method {self.name} has no parameter(s) {', '.join(unknown)}; its parameters: "
                                 f"{known}")
        self.config = {k: p.default for k, p in self.params.items()}
        self.config.update({k: self.params[k].parse(self.name, k, v) for k, v in values.items()})

    @property
    def spec(self) -> str:
        changed = {k: v for k, v in self.config.items() if v != self.params[k].default}
        return self.name + (":" + ",".join(f"{k}={_text(v)}" for k, v in sorted(changed.items())) if changed else "")

    def attribute(self, capture: Capture) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def notes(self, capture: Capture) -> dict[int, str]:
        """Row -> a note on that row's map (e.g. relevance that does not conserve the score); none by default."""
        return {}

    def needs_for(self, rows_in_backward: bool) -> frozenset[str]:
        """What this configured method needs from a pass; `rows_in_backward`: the pass can propagate readout rows
        during its backward (fused, pure self-attention), which a method may ask for instead of maps."""
        return self.needs

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # an abstract base (e.g. the LRP family's): shares code, not registered
            return
        cls.needs_gradients = bool(cls.needs & {*BACKWARD_STATS, *GRADIENT_NEEDS})
        if cls.name in _REGISTRY:
            raise ValueError(f"method {cls.name!r} is registered twice")
        _REGISTRY[cls.name] = cls

    def __repr__(self) -> str:
        return f"method({self.spec!r})"


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def method(name: str, **params) -> Method:
    """A method with parameters, e.g. `method("chefer2021", start_layer=-1)`; accepted wherever a name is."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise AttnAuditError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None
    return cls(**params)


def get_method(spec: str | Method) -> Method:
    """A method from its name, its spec `name:key=value,...` (the CLI's --method form), or itself."""
    if isinstance(spec, Method):
        return spec
    name, _, given = str(spec).partition(":")
    params = {}
    for item in filter(None, (part.strip() for part in given.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise AttnAuditError(f"method {spec!r}: write parameters as {name}:KEY=VALUE[,KEY=VALUE]")
        params[key.strip()] = value.strip()
    return method(name.strip(), **params)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def check_family(method: Method, family: str) -> None:
    """Refuse a method on a family it does not run on, naming the families it runs on and the methods `family` has."""
    if method.families is not None and family not in method.families:
        raise UnsupportedModelError(f"method {method.name} does not run on {family} models (it runs on "
                                    f"{', '.join(sorted(method.families))}); {family} models have: "
                                    f"{', '.join(methods_for_family(family))}")


def default_methods() -> list[str]:
    """What an audit runs when no method is named: the attention methods (chefer2021 and its baselines), which run
    on every family; the LRP family is asked for by name."""
    return [n for n in available_methods() if _REGISTRY[n].families is None]


def methods_for_family(family: str) -> list[str]:
    """The registered methods that run on models of `family`."""
    return [n for n in available_methods() if _REGISTRY[n].families is None or family in _REGISTRY[n].families]


def method_info() -> list[tuple[str, bool, str, dict[str, Param]]]:
    """(name, needs_gradients, one-line description, parameters) for every registered method."""
    return [(n, _REGISTRY[n].needs_gradients, _REGISTRY[n].description, dict(_REGISTRY[n].params))
            for n in available_methods()]


START_LAYER = Param(int, 0, "first layer that contributes, per attention stream (negative counts from the end: "
                           "-1 = the last layer only)")


def from_layer(capture: Capture, start: int, method: str) -> Capture:
    """The capture with the events of layer `start` on, counted per attention stream (query, key modality) in
    model order: the layers before contribute nothing (R^{ss} = I through them)."""
    if start == 0:
        return capture
    events = capture.events
    streams: dict[tuple[str, str], list[AttentionEvent]] = {}
    for e in events:
        streams.setdefault((e.query, e.key), []).append(e)
    kept = set()
    for (query, key), stream in streams.items():
        first = start if start >= 0 else len(stream) + start
        if not 0 <= first < len(stream):
            raise AttnAuditError(f"method {method}: start_layer={start} is outside the model's {len(stream)} "
                                 f"{query}→{key} attention layers")
        kept.update(id(e) for e in stream[first:])
    return Capture([e for e in events if id(e) in kept], capture.masks, capture.readouts, capture.propagated,
                   capture.lrp)


def masked(capture: Capture, event: AttentionEvent, amap: torch.Tensor) -> torch.Tensor:
    """An event's (B, q, k) map with padding queries and keys zeroed."""
    return mask_pairs(amap, capture.masks[event.query], capture.masks[event.key])


def read_row(weights: torch.Tensor, amap: torch.Tensor) -> torch.Tensor:
    """weights (B, n_q) @ map (B, n_q, n_k) -> (B, n_k)."""
    return (weights.float().unsqueeze(1) @ amap).squeeze(1)


def last_event(capture: Capture, query: str, key: str) -> AttentionEvent | None:
    """The last attention from `query` tokens to `key` tokens (the baselines' 'last layer')."""
    events = capture.events_of(query, key)
    return events[-1] if events else None


def last_layer_rows(capture: Capture, map_of_event) -> dict[str, torch.Tensor]:
    """Rows of a map built from the last layer linking each readout's source to its modality."""
    rows = {}
    for m, readout in capture.readouts.items():
        event = last_event(capture, readout.source, m)
        n = capture.masks[m].shape[1]
        if event is None:
            rows[m] = readout.weights.new_zeros(readout.weights.shape[0], n)
        else:
            rows[m] = read_row(readout.weights, masked(capture, event, map_of_event(capture, event)))
    return rows
