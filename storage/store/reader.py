"""The reading half of `Store`: runs and their shard totals, rows of committed shards, explanations with numpy maps.

Lookups go by key, never through every run's files: a run's id (or prefix) is matched against the partition
values in the `runs` log, then only that run's partition of `runs` is read; the shard markers come from the
`shards` log (one marker per file, its values in the file's statistics; see `_markers`), so neither `runs()` nor
`run(id)` opens the markers' files, and a table read for one run opens only that run's partition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from attn_audit.storage.explanation import Explanation
from attn_audit.storage.store.errors import SampleNotFoundError, StoreError, UnknownRunError
from attn_audit.storage.store.layout import TABLES
from attn_audit.storage.store.records import RunInfo
from deltalake import DeltaTable

MARKER_COLUMNS = ("run_id", "shard_id", "samples", "explained", "failed", "maps")  # what the totals add up
TOTALS = {"shards_committed": ("shard_id", "count"), "samples_done": ("samples", "sum"),
          "explained": ("explained", "sum"), "failed": ("failed", "sum"), "maps": ("maps", "sum")}


class Reader:
    """Store's reading methods (Store supplies `delta` and `_read`)."""

    def runs(self) -> pa.Table:
        """Every run with its committed shards, samples, explained samples, failures and maps."""
        runs = self._read("runs").cast(TABLES["runs"].schema)  # runs first: a marker implies its run
        totals = _with_totals(runs, self._markers(self.delta("shards")))
        return totals.sort_by([("created_at", "ascending"), ("run_id", "ascending")])

    def run_ids(self) -> set[str]:
        """The ids of every run, from the `runs` log alone (no data file is opened)."""
        return _ids(self.delta("runs"))

    def run(self, run_id: str) -> RunInfo:
        """A run by id or unique id prefix; UnknownRunError otherwise."""
        if not isinstance(run_id, str) or not run_id:
            raise UnknownRunError("give a run id (see `attn-audit runs --store ...`)")
        runs = self.delta("runs")
        found = self._match(runs, run_id)
        row = self._read("runs", runs, run_ids=[found]).cast(TABLES["runs"].schema)
        info = _with_totals(row, self._markers(self.delta("shards"), found)).to_pylist()[0]
        info.pop("num_shards")
        return RunInfo(**info)

    def _match(self, runs: DeltaTable, run_id: str) -> str:
        """The one run id equal to `run_id`, else starting with it, among the partition values of the `runs`
        snapshot (from its log: no data file is opened)."""
        ids = _ids(runs)
        matches = [run_id] if run_id in ids else [i for i in ids if i.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        listed = self._read("runs", runs, columns=["run_id", "created_at"]).sort_by(
            [("created_at", "ascending"), ("run_id", "ascending")])["run_id"].to_pylist()
        known = ", ".join(listed[:10]) + (" ..." if len(listed) > 10 else "") if listed else "none"
        what = "is ambiguous" if matches else "is not in"
        raise UnknownRunError(f"run {run_id!r} {what} the store {self.uri} (runs: {known})")

    def committed_shards(self, run_id: str) -> set[int]:
        return set(self._markers(self.delta("shards"), run_id)["shard_id"].to_pylist())

    def _markers(self, shards: DeltaTable, run_id: str | None = None) -> pa.Table:
        """MARKER_COLUMNS of the markers of every run, or of one, in the `shards` snapshot. A shard commit writes
        its marker as a file of one row, and the log keeps each file's statistics: for such a file min = the
        value, so those markers come from the log. The other files (merged by `optimize`, or without
        statistics) are read, and only they: opening a table's files costs ~0.35 ms each (3.5 s for 10,000
        markers), its log's file list ~1 ms for all of them."""
        actions = pa.table(shards.get_add_actions(flatten=True))
        if run_id is not None:
            actions = actions.filter(pc.equal(actions["partition.run_id"], run_id))
        stats = [f"min.{c}" for c in MARKER_COLUMNS[1:]]
        one = pa.array(np.zeros(actions.num_rows, bool))
        if all(c in actions.column_names for c in ("num_records", *stats)):
            one = pc.equal(actions["num_records"], 1)
            for column in stats:
                one = pc.and_kleene(one, pc.is_valid(actions[column]))
            one = pc.fill_null(one, False)
        schema = pa.schema([TABLES["shards"].schema.field(c) for c in MARKER_COLUMNS])
        logged = actions.filter(one)
        markers = pa.table([logged["partition.run_id"], *(logged[c] for c in stats)], names=MARKER_COLUMNS)
        rest = actions.filter(pc.invert(one))
        if not rest.num_rows:
            return markers.cast(schema)
        paths = {unquote(p) for p in rest["path"].to_pylist()}
        read = self._read("shards", shards, run_ids=set(rest["partition.run_id"].to_pylist()),
                          keep=paths.__contains__, columns=list(MARKER_COLUMNS))
        return pa.concat_tables([markers.cast(schema), read.cast(schema)])

    def table(self, name: str, *, run_id: str | None = None, method: str | Iterable[str] | None = None,
              sample_ids: Iterable[str] | None = None, modality: str | Iterable[str] | None = None,
              columns: list[str] | None = None) -> pa.Table:
        """Rows of one table as Arrow, filtered by run (id or prefix), method(s), sample ids, modality(ies).
        Rows of shards whose commit has not finished are never returned."""
        if name not in TABLES:
            raise StoreError(f"no table {name!r}; tables: {', '.join(TABLES)}")
        spec = TABLES[name]
        if run_id is not None:
            run_id = self.run(run_id).run_id
        committed = self._committed_filter(run_id) if spec.gated else None  # markers first, data after
        filters = [] if committed is None else [committed]
        for column, wanted in (("method", method), ("modality", modality), ("sample_id", sample_ids)):
            if wanted is not None and column in spec.schema.names:
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                filters.append(pc.field(column).isin(values))
        expression = None
        for f in filters:
            expression = f if expression is None else expression & f
        wanted_columns = columns or spec.schema.names
        unknown = [c for c in wanted_columns if c not in spec.schema.names]
        if unknown:
            raise StoreError(f"table {name} has no column(s) {unknown}; columns: {spec.schema.names}")
        table = self._read(name, run_ids=None if run_id is None else [run_id], columns=wanted_columns,
                           filter=expression)
        return table.cast(pa.schema([spec.schema.field(c) for c in wanted_columns]))

    def frame(self, name: str, **filters):
        """Like `table()`, as a pandas DataFrame (needs pandas)."""
        return self.table(name, **filters).to_pandas()

    def explanations(self, **filters) -> pa.Table:
        return self.table("explanations", **filters)

    def predictions(self, **filters) -> pa.Table:
        return self.table("predictions", **filters)

    def errors(self, **filters) -> pa.Table:
        return self.table("errors", **filters)

    def metrics(self, **filters) -> pa.Table:
        return self.table("metrics", **filters)

    def perturbation_curves(self, **filters) -> pa.Table:
        return self.table("perturbation_curves", **filters)

    def shards(self, run_id: str | None = None) -> pa.Table:
        return self.table("shards", run_id=run_id)

    def load_explanations(self, run_id: str, *, method: str | Iterable[str] | None = None,
                          sample_ids: Iterable[str] | None = None,
                          modality: str | Iterable[str] | None = None) -> list[Explanation]:
        """Explanation objects with numpy maps (float32, stored shape), one per (sample, target, method),
        ordered by sample id, target and method."""
        run_id = self.run(run_id).run_id
        sample_ids = None if sample_ids is None else list(sample_ids)
        maps = self.table("explanations", run_id=run_id, method=method, sample_ids=sample_ids, modality=modality)
        preds = self.table("predictions", run_id=run_id, sample_ids=sample_ids)
        pred_by_key = {(p["sample_id"], p["target_index"]): p for p in preds.to_pylist()}
        out: dict[tuple, Explanation] = {}
        flat = maps["relevance"].combine_chunks()
        values, offsets = flat.values.to_numpy(zero_copy_only=False), flat.offsets.to_numpy()
        meta = maps.select(["sample_id", "method", "target_index", "modality", "shape", "tokens",
                            "special"]).to_pylist()
        for i, row in enumerate(meta):
            key = (row["sample_id"], row["target_index"], row["method"])
            if key not in out:
                pred = pred_by_key.get((row["sample_id"], row["target_index"]), {})
                out[key] = Explanation(
                    run_id=run_id, sample_id=row["sample_id"], method=row["method"], target=row["target_index"],
                    target_label=pred.get("target_label"), score=_or_nan(pred.get("score")),
                    probability=_or_nan(pred.get("probability")), prediction=pred.get("prediction"),
                    label=pred.get("label"), target_detail=pred.get("target_detail"))
            exp, modality_name = out[key], row["modality"]
            exp.relevance[modality_name] = values[offsets[i]:offsets[i + 1]].astype(np.float32).reshape(row["shape"])
            if row["tokens"] is not None:
                exp.tokens[modality_name] = row["tokens"]
            if row["special"] is not None:
                exp.special[modality_name] = np.asarray(row["special"], dtype=bool)
        return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1] if k[1] is not None else -1, k[2]))]

    def explanation(self, run_id: str, sample_id: str, method: str | None = None) -> list[Explanation]:
        """One sample's explanations (every target, one method or all); SampleNotFoundError says whether
        the sample failed in the run or is not part of it."""
        info = self.run(run_id)
        if method is not None and method not in info.methods:
            raise SampleNotFoundError(f"run {info.run_id} has no method {method!r} (methods: "
                                      f"{', '.join(info.methods)})")
        found = self.load_explanations(info.run_id, method=method, sample_ids=[sample_id])
        if found:
            return found
        failed = self.table("errors", run_id=info.run_id, sample_ids=[sample_id]).to_pylist()
        if failed:
            raise SampleNotFoundError(f"sample {sample_id!r} failed in run {info.run_id} "
                                      f"({failed[0]['stage']}): {failed[0]['message']}")
        raise SampleNotFoundError(f"sample {sample_id!r} is not in run {info.run_id} "
                                  f"({info.samples_done:,} samples committed of {info.num_samples:,})")

    def sample_shard(self, run_id: str, sample_id: str) -> tuple[int, int] | None:
        """The dataset position range [start, stop) of the shard holding a sample, or None."""
        rows = self.table("predictions", run_id=run_id, sample_ids=[sample_id], columns=["shard_id"]).to_pylist()
        if not rows:
            return None
        return self.run(run_id).shard_range(rows[0]["shard_id"])

    def _committed_filter(self, run_id: str | None):
        """The rows of committed shards (of one run, or of all), as a dataset filter."""
        markers = self._markers(self.delta("shards"), run_id)
        by_run: dict[str, list[int]] = {}
        for r, s in zip(markers["run_id"].to_pylist(), markers["shard_id"].to_pylist()):
            by_run.setdefault(r, []).append(s)
        if not by_run:
            return pc.scalar(False)
        expression = None
        for r, ids in by_run.items():
            term = (pc.field("run_id") == r) & pc.field("shard_id").isin(ids)
            expression = term if expression is None else expression | term
        return expression


def _ids(runs: DeltaTable) -> set[str]:
    return {p["run_id"] for p in runs.partitions()}


def _with_totals(runs: pa.Table, markers: pa.Table) -> pa.Table:
    """`runs` rows plus num_shards and what each run's markers add up to (TOTALS)."""
    sums = markers.group_by("run_id").aggregate(list(TOTALS.values()))
    by_run = {r["run_id"]: r for r in sums.to_pylist()}
    extra: dict[str, list[int]] = {"num_shards": [], **{key: [] for key in TOTALS}}
    for run_id, n, size in zip(runs["run_id"].to_pylist(), runs["num_samples"].to_pylist(),
                               runs["shard_size"].to_pylist()):
        got = by_run.get(run_id, {})
        extra["num_shards"].append(math.ceil(n / size) if size else 0)
        for key, (column, how) in TOTALS.items():
            extra[key].append(got.get(f"{column}_{how}") or 0)
    for key, values in extra.items():
        runs = runs.append_column(key, pa.array(values, pa.int64()))
    return runs


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)
