"""Damaged checkpoints are refused with one line naming the problem, by the cheap `models.check_checkpoint`
(headers and shapes only) and by `models.load`; every built-in model passes both."""

import shutil
import warnings

import pytest
import torch
from attn_audit.models.zoo import ZOO_DIR, available
from safetensors.torch import load_file, save_file

from attn_audit import models
from tests import tiny_models


def _edit(path, change) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _drop_classifier(t):
    for name in [n for n in t if n.startswith("classifier.")]:
        del t[name]


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


def _garble(path) -> None:
    path.write_bytes((64).to_bytes(8, "little") + b"{not json" + bytes(100))


DAMAGES = {  # name: (how, what the error says, whether the cheap check can see it)
    "missing classifier": (lambda p: _edit(p, _drop_classifier),
                           r"does not fit ViTForImageClassification: 2 tensor\(s\) missing \(classifier\.bias, "
                           r"classifier\.weight: they would be random\)", True),
    "extra tensor": (lambda p: _edit(p, lambda t: t.update({"extra.weight": torch.zeros(3)})),
                     r"1 unexpected \(extra\.weight\)", True),
    "wrong shape": (lambda p: _edit(p, lambda t: t.update({"classifier.weight": torch.zeros(5, 128)})),
                    r"wrong shape for ViTForImageClassification: classifier\.weight is 5×128 in the file, 10×128 in "
                    r"the model", True),
    "truncated": (_truncate, r"model\.safetensors is not a whole safetensors file \(its header describes "
                  r"2,200,880 bytes, the file has 2,199,880\)", True),
    "garbled header": (_garble, r"model\.safetensors is not a whole safetensors file \(its header is not valid", True),
    "NaN weight": (lambda p: _edit(p, lambda t: t["vit.layernorm.weight"].__setitem__(3, float("nan"))),
                   r"1 weight tensor\(s\) hold NaN or inf \(vit\.layernorm\.weight\)", False),
}


@pytest.fixture
def vit_copy(tmp_path):
    return shutil.copytree(ZOO_DIR / "fashion-vit", tmp_path / "fashion-vit")


@pytest.mark.parametrize("name", available())
def test_every_builtin_model_passes_the_check_and_loads_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models.check_checkpoint(f"builtin:{name}")
        models.load(f"builtin:{name}", device="cpu")


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_problem(vit_copy, damage):
    how, says, seen_by_check = DAMAGES[damage]
    how(vit_copy / "model.safetensors")
    calls = [models.check_checkpoint, models.load] if seen_by_check else [models.load]
    for call in calls:
        with pytest.raises(models.ModelLoadError, match=says) as err:
            call(str(vit_copy))
        assert "\n" not in str(err.value)
    if not seen_by_check:
        models.check_checkpoint(str(vit_copy))  # the cheap check reads no tensor data


def test_many_missing_tensors_are_named_a_few_then_counted(vit_copy):
    # the model's names (transformers renames this file's vit.encoder.layer.3.* on load)
    _edit(vit_copy / "model.safetensors", lambda t: [t.pop(n) for n in [n for n in t if ".layer.3." in n]])
    with pytest.raises(models.ModelLoadError, match=r"16 tensor\(s\) missing \(vit\.layers\.3\.\S+, \S+, "
                       r"\S+ and 13 more: they would be random\)"):
        models.check_checkpoint(str(vit_copy))


def test_not_strict_warns_about_missing_weights_and_loads(vit_copy):
    _edit(vit_copy / "model.safetensors", _drop_classifier)
    with pytest.warns(UserWarning, match=r"2 tensor\(s\) missing \(classifier\.bias"):
        models.check_checkpoint(str(vit_copy), strict=False)
    with pytest.warns(UserWarning, match=r"2 tensor\(s\) missing \(classifier\.bias"):
        m = models.load(str(vit_copy), device="cpu", strict=False)
    assert m.num_classes == 10


def test_a_missing_shard_of_a_sharded_checkpoint_is_named(tmp_path):
    tiny_models.vit().save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    models.check_checkpoint(str(tmp_path))
    shards[-1].unlink()
    for call in (models.check_checkpoint, models.load):
        with pytest.raises(models.ModelLoadError, match=rf"lacks {shards[-1].name} \(named by model\.safetensors"):
            call(str(tmp_path))


@pytest.mark.parametrize("damage, says", [
    (lambda t: t.pop("bias"), r"attn_audit_head\.safetensors does not fit its pooling head: 1 tensor\(s\) missing "
                              r"\(bias: they would be random\)"),
    (lambda t: t.update({"weight": torch.zeros(4, 384)}),
     r"attn_audit_head\.safetensors: tensors have the wrong shape for its pooling head: weight is 4×384 in the file, "
     r"5×384 in the model"),
])
def test_a_damaged_pooling_head_is_refused(tmp_path, damage, says):
    folder = shutil.copytree(ZOO_DIR / "minilm-bbc", tmp_path / "minilm-bbc")  # its encoder is a package
    _edit(folder / "attn_audit_head.safetensors", damage)
    for call in (models.check_checkpoint, models.load):
        with pytest.raises(models.ModelLoadError, match=says):
            call(str(folder))


def test_a_pooling_head_without_its_weights_is_refused(tmp_path):
    folder = shutil.copytree(ZOO_DIR / "minilm-bbc", tmp_path / "minilm-bbc")
    (folder / "attn_audit_head.safetensors").unlink()
    for call in (models.check_checkpoint, models.load):
        with pytest.raises(models.ModelLoadError, match=r"attn_audit_head\.json but no attn_audit_head\.safetensors"):
            call(str(folder))
