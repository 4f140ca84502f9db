"""Matching dataset labels to a model's classes (tasks.labels), on hand-written cases."""

import pytest
from attn_audit.tasks.labels import Label, LabelError, LabelMap, parse_label_map

CLASSES = ("T-shirt/top", "Trouser", "Ankle boot")


def test_names_match_ignoring_case_and_spaces_and_keep_the_given_name():
    labels = LabelMap(CLASSES)
    assert labels.resolve("trouser") == Label("trouser", 1)
    assert labels.resolve("  ANKLE   boot ") == Label("  ANKLE   boot ", 2)
    assert labels.resolve(0) == Label("T-shirt/top", 0)  # an integer is the model's index, named by its class


def test_integers_of_a_dataset_that_names_its_classes_stand_for_those_names():
    labels = LabelMap(CLASSES, dataset_names=("Ankle boot", "Trouser"))  # the dataset's own (sorted) order
    assert labels.resolve(0) == Label("Ankle boot", 2)
    with pytest.raises(LabelError, match="outside the dataset's 2 class names"):
        labels.resolve(2)


def test_a_mapping_names_what_the_classes_do_not():
    labels = LabelMap(CLASSES, mapping={"tshirt": "T-shirt/top", "boots": 2})
    assert labels.resolve("tshirt") == Label("tshirt", 0)
    assert labels.resolve("Boots") == Label("Boots", 2)  # the mapping's keys match loosely too
    with pytest.raises(LabelError, match="maps 'x' to 'Hat'"):
        LabelMap(CLASSES, mapping={"x": "Hat"})


def test_unknown_labels_are_all_named_with_the_classes_and_the_option():
    labels = LabelMap(CLASSES)
    labels.check(["Trouser", 1, "t-shirt/top"])
    with pytest.raises(LabelError) as refused:
        labels.check(["Trouser", "Hat", "Scarf", 7])
    text = str(refused.value)
    assert text.startswith("3 dataset label(s)") and "'Hat'" in text and "'Scarf'" in text and "7" in text
    assert "0=T-shirt/top, 1=Trouser, 2=Ankle boot" in text and "--label-map" in text
    for bad in (True, 1.5, None):
        with pytest.raises(LabelError):
            labels.resolve(bad)


def test_label_map_from_json_text_or_file(tmp_path):
    assert parse_label_map('{"tshirt": "T-shirt/top", "7": 2}') == {"tshirt": "T-shirt/top", "7": 2}
    path = tmp_path / "map.json"
    path.write_text('{"boots": "Ankle boot"}')
    assert parse_label_map(str(path)) == {"boots": "Ankle boot"}
    assert parse_label_map(None) == {}
    for bad, message in (("missing.json", "no such file"), ("{oops", "not valid JSON"), ('{"a": [1]}', "values"),
                         ("[1, 2]", "no such file")):
        with pytest.raises(LabelError, match=message):
            parse_label_map(bad)


def test_a_name_two_classes_share_is_refused_not_guessed():
    labels = LabelMap(("crane", "kite", "Crane"))  # ImageNet has two "crane"s (134 and 517)
    with pytest.raises(LabelError, match="names 2 of the model's classes"):
        labels.resolve("crane")
    assert labels.resolve(2) == Label("Crane", 2)  # an index still says which
