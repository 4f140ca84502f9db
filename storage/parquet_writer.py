"""The output writer of `attn-audit explain`: one Parquet file per table in a folder.

Batches stream to disk as they come (no whole run in memory); each file appears under its final
name only when complete. One class on purpose: the transactional store replaces it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ParquetTablesWriter:
    """with ParquetTablesWriter(folder, schemas) as w: w.write("explanations", table) ..."""

    def __init__(self, out_dir: str | Path, schemas: dict[str, pa.Schema]):
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"{self.out} is a file; give a folder for the output tables")
        self.schemas = schemas
        self._writers: dict[str, pq.ParquetWriter] = {}

    def _tmp(self, name: str) -> Path:
        return self.out / f".{name}.parquet.partial"

    def __enter__(self) -> ParquetTablesWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, schema in self.schemas.items():
            self._writers[name] = pq.ParquetWriter(self._tmp(name), schema, compression="zstd")
        return self

    def write(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self._writers[name].write_table(table)

    def __exit__(self, exc_type, *_):
        for name, writer in self._writers.items():
            writer.close()
            if exc_type is None:
                self._tmp(name).replace(self.paths[name])
            else:  # an interrupted run leaves no half-written table under a final name
                self._tmp(name).unlink(missing_ok=True)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.out / f"{name}.parquet" for name in self.schemas}
