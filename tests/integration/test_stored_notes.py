"""What the evaluation skipped, read back: per evaluation settings (the evaluation's own summary) or, for a report
of whatever was evaluated, of each note the evaluation that skipped most; lines of one test without its name."""

from attn_audit.tasks.evaluate import EvalSettings
from attn_audit.tasks.evaluate.aggregate import stored_notes
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import metric_rows

from tests.integration.small_store import build_store


def test_notes_per_settings_and_of_every_evaluation(tmp_path):
    store, run_id = build_store(tmp_path / "store")
    first, second = EvalSettings(), EvalSettings(tau=0.3)
    for settings, count in ((first, 2), (second, 5)):
        for chunk in range(2):  # two chunks of one evaluation: summed
            notes, rows = Notes(), metric_rows()
            notes.add("chefer2021", "text", "localisation", "no text ground truth", count)
            notes.write(rows, settings.digest("localisation"))
            store.append("metrics", rows.table(run_id), key=f"{run_id}:test:{settings.tau}:{chunk}")
    assert stored_notes(store, run_id, first).lines() == [
        "localisation: 4 × chefer2021/text skipped — no text ground truth"]
    every = stored_notes(store, run_id)
    assert every.lines("localisation") == ["10 × chefer2021/text skipped — no text ground truth"]
    assert every.lines("perturbation") == []
