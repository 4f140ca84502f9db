"""`evaluate_run`: the downstream evaluation of a stored run — perturbation tests, localisation, the
sanity check, then aggregation — reading explanations from the store chunk by chunk and writing results back.

    summary = evaluate_run("out/store", "3f2a", tests=("perturbation", "localisation"), limit=1000)

Callable from the CLI (`attn-audit evaluate`, chunks evaluated in this process) and as a downstream job of the
audit flow (chunks spread over the run's Ray actors, which already hold the model: `pool=`). Each (test, method,
chunk) is one idempotent store commit: rerunning skips what is committed, so an interrupted evaluation resumes
and a chunk whose worker died is simply evaluated again; the same settings never write twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from attn_audit.storage.datasets import SampleError as ReadError
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate.aggregate import aggregate_run, stored_notes
from attn_audit.tasks.evaluate.chunks import SANITY_UNIT, Chunk, committed_keys, plan_chunks, sanity_units
from attn_audit.tasks.evaluate.localisation_job import localisation_rows
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.perturbation_job import perturbation_rows
from attn_audit.tasks.evaluate.rows import curve_rows, metric_rows
from attn_audit.tasks.evaluate.sanity import sanity_rows
from attn_audit.tasks.evaluate.settings import DEFAULT_TESTS, EvalSettings, parse_tests
from attn_audit.tasks.labels import LabelMap, label_map_for

from attn_audit import models

CHUNK_TESTS = ("perturbation", "localisation")  # per chunk; the sanity check has units of its own (chunks.sanity_units)


@dataclass(frozen=True)
class ChunkJob:
    """What evaluating a chunk needs besides the model and the store: plain values, sent to Ray actors."""

    run_id: str
    dataset_ref: str
    model_ref: str
    config: dict
    jobs: tuple[tuple[str, str], ...]  # (test, method)
    settings: EvalSettings
    batch_size: int
    max_rows: int | None


@dataclass
class EvaluationSummary:
    run_id: str
    methods: list[str]
    tests: tuple[str, ...]
    settings: dict
    chunks: int = 0
    chunks_skipped: int = 0  # every job already committed
    samples: int = 0  # dataset positions evaluated now
    results: list[dict] = field(default_factory=list)  # aggregate rows (aggregate.metric_summary)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Context:
    store: Store
    run_id: str
    dataset: object
    settings: EvalSettings
    device: str
    batch_size: int
    max_rows: int | None
    config: dict
    model_ref: str
    _model: models.LoadedModel | None = None

    def model(self) -> models.LoadedModel:
        if self._model is None:
            self._model = models.load(self.model_ref, device=self.device,
                                      precision=self.config.get("precision", "float32"),
                                      truncate=bool(self.config.get("truncate", False)))
        return self._model

    def label_map(self) -> LabelMap | None:
        return label_map_for(self.model().class_names, self.dataset, self.config.get("label_map"))

    def settings_for(self, test: str) -> EvalSettings:
        """The perturbation test runs the protocol the model has (EvalSettings.for_modes); others as given."""
        return self.settings.for_modes(self.model().adapter.perturbation_modes) if test == "perturbation" \
            else self.settings

    def read(self, positions: Iterable[int], notes: Notes) -> dict[str, dict]:
        samples = {}
        for i in positions:
            try:
                sample = self.dataset[i]
            except ReadError as err:
                notes.add("*", None, "read", err.message)
                continue
            samples[str(sample["id"])] = sample
        return samples


def evaluate_run(store: str | Store, run_id: str, tests: Iterable[str] | str = DEFAULT_TESTS,
                 methods: list[str] | None = None, limit: int | None = None, batch_size: int = 32,
                 device: str = "auto", perturbation_mode: str = "drop", settings: EvalSettings | None = None,
                 max_rows: int | None = None, storage_options: dict[str, str] | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 model: models.LoadedModel | None = None, pool=None) -> EvaluationSummary:
    """Evaluate run `run_id` (id or unique prefix) of `store`; returns the aggregate results and notes.

    `tests`: perturbation, localisation, sanity (all three by default). `methods`: default the run's. `limit`: the
    first N dataset positions. `batch_size`: samples read and perturbed together (each gives 2 × steps forward rows,
    cut into passes of ≤ `max_rows`, default by device: models.perturbation.default_max_rows).
    `perturbation_mode`: ViT patches are dropped (`drop`) or zeroed in pixels (`zero`); text always drops.
    `settings` overrides every knob (EvalSettings). `model`: the run's model already loaded, instead of loading
    `run.model_ref` here. `pool`: a tasks.workers.WorkerPool of the run's model — the chunks' perturbation passes
    then run on its actors, several chunks at once.
    `on_progress(done, total)`: samples done, once before the first chunk (0) and after each; the sanity check's
    samples count among them (its units of work run beside the chunks)."""
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store.open(store, storage_options=storage_options)
    run = store.run(run_id)
    tests = parse_tests(tests)
    settings = settings or EvalSettings(perturbation_mode=perturbation_mode)
    methods = list(methods or run.methods)
    unknown = [m for m in methods if m not in run.methods]
    if unknown:
        raise models.AttnAuditError(f"run {run.run_id} has no method(s) {unknown}; its methods: {run.methods}")
    if batch_size < 1 or (max_rows is not None and max_rows < 1) or (limit is not None and limit < 0):
        raise models.AttnAuditError("batch_size and max_rows must be ≥ 1, limit ≥ 0")
    job = ChunkJob(run.run_id, run.dataset_ref, run.model_ref, run.config_dict,
                   tuple((t, m) for t in tests if t in CHUNK_TESTS for m in methods), settings, batch_size, max_rows)
    ctx = _Context(store, run.run_id, open_dataset(run.dataset_ref), settings, device, batch_size, max_rows,
                   run.config_dict, run.model_ref, model)
    summary = EvaluationSummary(run.run_id, methods, tests, settings.as_dict())
    chunks = plan_chunks(store, run.run_id, limit)
    work = [(job, c) for c in chunks] if job.jobs else []
    if "sanity" in tests and chunks:
        sanity = replace(job, jobs=tuple(("sanity", m) for m in methods))
        work += [(sanity, unit) for unit in sanity_units(chunks, settings.sanity_samples)]
    total, done = sum(c.size for _, c in work), 0
    if on_progress is not None:
        on_progress(0, total)
    outcomes = _on_pool(pool, work) if pool is not None else ((c, _evaluate_chunk(ctx, c, list(j.jobs)))
                                                                for j, c in work)
    for chunk, evaluated in outcomes:
        done += chunk.size
        if on_progress is not None:
            on_progress(done, total)
        if chunk.shard_id == SANITY_UNIT:
            continue
        summary.chunks += 1
        summary.chunks_skipped += not evaluated
        summary.samples += chunk.size if evaluated else 0
    summary.results, _ = aggregate_run(store, run.run_id, settings)
    summary.notes = stored_notes(store, run.run_id, settings).lines()
    if run.status == "running":
        summary.notes.append(f"run {run.run_id} is still running: only its {len(chunks)} committed shards were "
                             "evaluated")
    summary.seconds = time.perf_counter() - started
    return summary


def evaluate_chunk(store: Store, dataset, model: models.LoadedModel, job: ChunkJob, chunk: Chunk) -> bool:
    """Evaluate one chunk with a loaded model (what a Ray actor runs); False when all was committed before."""
    ctx = _Context(store, job.run_id, dataset, job.settings, str(model.device), job.batch_size, job.max_rows,
                   job.config, job.model_ref, model)
    return _evaluate_chunk(ctx, chunk, list(job.jobs))


def _on_pool(pool, work: list[tuple[ChunkJob, Chunk]]):
    """(chunk, evaluated) as the pool's actors finish them (tasks.workers: its policy retries a chunk whose worker
    died); a chunk that still failed is raised once the others are done."""
    failed = None
    for outcome in pool.evaluate(work):
        if outcome.failed:
            failed = failed or outcome.error
            continue
        yield outcome.item.chunk, outcome.value
    if failed is not None:
        raise failed


def _evaluate_chunk(ctx: _Context, chunk: Chunk, jobs: list[tuple[str, str]]) -> bool:
    """Compute and commit the jobs of one chunk that are not committed yet; False when none was pending."""
    keys = {job: chunk.key(ctx.run_id, job[0], job[1], ctx.settings_for(job[0]).key_part(job[0])) for job in jobs}
    done = committed_keys(ctx.store, "metrics", list(keys.values()))
    pending = [job for job in jobs if keys[job] not in done]
    if not pending:
        return False
    if chunk.shard_id == SANITY_UNIT:
        _sanity(ctx, [m for _, m in pending], chunk, {m: keys[("sanity", m)] for _, m in pending})
        return True
    methods = sorted({m for _, m in pending})
    ids = [ctx.dataset.sample_id(i) for i in range(chunk.start, chunk.stop)]
    by_sample: dict[tuple[str, str], list] = {}
    for exp in ctx.store.load_explanations(ctx.run_id, method=methods, sample_ids=ids):
        by_sample.setdefault((exp.method, exp.sample_id), []).append(exp)
    notes = {job: Notes() for job in pending}
    metrics = {job: metric_rows() for job in pending}
    curves = {m: curve_rows() for t, m in pending if t == "perturbation"}
    for lo in range(chunk.start, chunk.stop, ctx.batch_size):
        samples = ctx.read(range(lo, min(lo + ctx.batch_size, chunk.stop)), notes[pending[0]])
        batch = ctx.model().preprocess(list(samples.values()), errors="collect") if curves else None
        for test, method in pending:
            exps = [x for sid in samples for x in by_sample.get((method, sid), [])]
            if test == "perturbation":
                perturbation_rows(ctx.model(), batch, samples, exps, method, ctx.settings_for(test), curves[method],
                                  metrics[(test, method)], notes[(test, method)], ctx.max_rows, ctx.label_map())
            else:
                localisation_rows(samples, exps, method, ctx.settings, metrics[(test, method)], notes[(test, method)])
    for job in pending:
        notes[job].write(metrics[job], ctx.settings.digest(job[0]))
        if job[0] == "perturbation" and len(curves[job[1]]):
            ctx.store.append("perturbation_curves", curves[job[1]].table(ctx.run_id), key=keys[job])
        if len(metrics[job]):
            ctx.store.append("metrics", metrics[job].table(ctx.run_id), key=keys[job])
    return True


def _sanity(ctx: _Context, methods: list[str], unit: Chunk, keys: dict[str, str]) -> None:
    """The sanity check on the unit's positions (a part of the run's first `sanity_samples`), one commit per
    method."""
    digest = ctx.settings.digest("sanity")
    notes = Notes()
    samples = ctx.read(range(unit.start, unit.stop), notes)
    batch = ctx.model().preprocess(list(samples.values()), errors="collect")
    exps = ctx.store.load_explanations(ctx.run_id, method=methods, sample_ids=batch.sample_ids)
    originals = {m: [x for x in exps if x.method == m] for m in methods}
    rows = {m: metric_rows() for m in methods}
    sanity_rows(ctx.model(), batch, originals, ctx.settings, rows, notes)
    for m in methods:
        Notes({k: v for k, v in notes.items() if k[0] in (m, "*")}).write(rows[m], digest)
        if len(rows[m]):
            ctx.store.append("metrics", rows[m].table(ctx.run_id), key=keys[m])
