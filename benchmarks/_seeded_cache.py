"""The seeded cache of benchmarks/memory_large.py (its --mode seeded-cache): a cache entry for
N x F synthetic rows written without the warehouse, checked against a real pull of a small
probe. How and why it equals a pull: memory_large.py's docstring, steps 2-4.

  python benchmarks/_seeded_cache.py --repo CHECKOUT --rows N --features F --probe-rows P
      --seed-batch-rows B --workdir DIR [--extra 'a=1 b=2']

prints one JSON line: the key, the version, the file's size, whether an entry was reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional


def log(text: str) -> None:
    print(f"[memory {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _compose(rows: int, features: int, cache: Path, extra: List[str]) -> Any:
    """The config `python -m runner` composes for these overrides (hydra.* left out)."""
    from hydra import compose, initialize_config_dir

    from runner.commands.app import conf_dir  # registers runner's schema too

    overrides = ["data=synthetic", f"data.demo.rows={rows}", f"data.demo.n_features={features}"]
    overrides += [f"data.cache_dir={cache}"] + [x for x in extra if not x.lstrip("+~").startswith("hydra")]
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _seed_version(data_cfg: Any) -> str:
    """The embedded warehouse's data version of the synthetic seed (runner.embedded.demo.run_seed)."""
    import hashlib

    from runner.embedded.synthetic import synthetic_sql

    statements = synthetic_sql(data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC", data_cfg.demo)
    return "seed:" + hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


def _generated(data_cfg: Any, rows: int, batch_rows: int) -> Iterator[Any]:
    """The synthetic table's rows 1..rows in ID order, batch_rows at a time, computed by the
    seed script's own SELECT in fakesnow's in-process engine (the values the warehouse holds)."""
    import warnings

    import fakesnow
    import snowflake.connector

    from runner.embedded.synthetic import synthetic_sql

    database, schema = data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC"
    statements = synthetic_sql(database, schema, data_cfg.demo)
    create = statements[-1]
    generator = f"select seq8() + 1 as ID from table(generator(rowcount => {rows}))"
    head, sep, select = create.partition(" as\n")
    if not sep or not head.lower().startswith("create or replace table") or select.count(generator) != 1:
        raise SystemExit(f"memory: runner.embedded.synthetic's seed is not the SELECT this script knows:\n{create}")
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    with fakesnow.patch():
        conn = snowflake.connector.connect(database=database, schema=schema)
        cur = conn.cursor()
        for first in range(0, rows, batch_rows):
            n = min(batch_rows, rows - first)
            cur.execute(
                select.replace(generator, f"select seq8() + {first + 1} as ID from table(generator(rowcount => {n}))")
            )
            table = cur._arrow_table  # fakesnow's own result (what its server serializes)
            cur._arrow_table = None
            conn.results_cache.clear()  # fakesnow keeps every result for RESULT_SCAN
            yield table


def _chunk_sizes(rows: int, per_row: int) -> List[int]:
    """Row counts of the pieces the embedded server cuts a result of `rows` rows into."""
    from types import SimpleNamespace

    try:
        from runner.embedded.server import DEFAULT_CHUNK_BYTES, Chunks

        starts = Chunks(DEFAULT_CHUNK_BYTES).bounds(SimpleNamespace(nbytes=per_row * rows, num_rows=rows))
    except ImportError:  # a runner without the chunking server: 16 MiB pieces
        step = max(1, (16 << 20) // per_row)
        starts = list(range(0, rows, step))
    return [b - a for a, b in zip(starts, starts[1:] + [rows], strict=True)]


def _rechunked(tables: Iterator[Any], sizes: List[int], schema: Any) -> Iterator[Any]:
    """`tables` cut and joined into tables of `sizes` rows, in `schema` (the pulled entry's)."""
    import pyarrow as pa

    buf, off = None, 0
    for size in sizes:
        parts = []
        while size:
            if buf is None or off == buf.num_rows:
                buf, off = next(tables), 0
            take = min(size, buf.num_rows - off)
            parts.append(buf.slice(off, take))
            off, size = off + take, size - take
        piece = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        if not piece.schema.equals(schema, check_metadata=True):
            if piece.column_names != schema.names:
                raise SystemExit(f"memory: generated columns {piece.column_names} != the entry's {schema.names}")
            piece = pa.Table.from_arrays(
                [c.cast(f.type) for c, f in zip(piece.columns, schema, strict=True)], schema=schema
            )
        yield piece


def _rows_of(data_cfg: Any, rows: int, batch_rows: int, schema: Any, progress: bool) -> Iterator[Any]:
    """The table's rows as the pull receives them: generated, cut into the server's chunks."""
    import itertools

    tables = _generated(data_cfg, rows, batch_rows)
    first = next(tables)
    # The server sizes its chunks by the result's bytes per row (the same column types).
    sizes = _chunk_sizes(rows, max(1, first.nbytes // max(1, first.num_rows)))
    done, step, started = 0, max(1, rows // 20), time.perf_counter()
    for piece in _rechunked(itertools.chain([first], tables), sizes, schema):
        yield piece
        if progress and (done + piece.num_rows) // step > done // step:
            log(f"  {done + piece.num_rows:,} rows generated ({time.perf_counter() - started:.0f} s)")
        done += piece.num_rows


def _row_groups(path: Path) -> List[int]:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def _check_probe(cfg: Any, cache: Any, work: Path) -> Dict[str, Any]:
    """The probe run's entry, with the key derivation and the generator checked against it."""
    import pyarrow.parquet as pq

    from runner.data.cache import FeatureCache, cache_key
    from runner.data.offline import config_digest, embedded_digest

    digest = embedded_digest(cfg.data)
    found = cache.last(digest) if digest else None
    if found is None:
        raise SystemExit(
            f"memory: the probe's embedded index ({digest}) is not in {cache.root}: key derivation differs"
        )
    key = found[0]
    if (cache.last(config_digest(cfg.data)) or ("",))[0] != key:
        raise SystemExit("memory: the probe's config index names another key: config_digest differs")
    entry, meta = cache.get(key)
    source = meta["source"]
    identity = {k: source[k] for k in ("account", "database", "schema")}
    if source["version"] != _seed_version(cfg.data):
        raise SystemExit(f"memory: probe version {source['version']} != {_seed_version(cfg.data)} recomputed")
    if cache_key({"sql": source["query"], "identity": identity, "version": source["version"]}) != key:
        raise SystemExit("memory: the probe's key is not cache_key(sql, identity, version) of its metadata")
    schema = pq.read_schema(entry.path)
    schema = schema.remove_metadata().with_metadata(
        {k: v for k, v in (schema.metadata or {}).items() if not k.startswith(b"runner")}
    )
    # The generator on the probe's rows, in uneven batches, through FeatureCache.put.
    check = FeatureCache(str(work / "probe-check"))
    rows = entry.num_rows
    written = check.put(key, _rows_of(cfg.data, rows, max(7, rows // 3 + 7), schema, False), meta)
    mine, theirs = pq.ParquetFile(written), pq.ParquetFile(entry.path)
    strip = lambda s: s.with_metadata({k: v for k, v in (s.metadata or {}).items() if k != b"runner.check"})  # noqa: E731
    problems = []
    if not strip(mine.schema_arrow).equals(strip(theirs.schema_arrow), check_metadata=True):
        problems.append(f"schema differs:\n{mine.schema_arrow}\nvs\n{theirs.schema_arrow}")
    if not mine.read().equals(theirs.read()):
        problems.append("values differ")
    if _row_groups(written) != _row_groups(entry.path):
        problems.append(f"row groups {_row_groups(written)} vs {_row_groups(entry.path)}")
    shutil.rmtree(work / "probe-check", ignore_errors=True)
    if problems:
        raise SystemExit("memory: the generated probe rows differ from the pulled probe entry: " + "; ".join(problems))
    return {
        "key": key,
        "source": source,
        "identity": identity,
        "schema": schema,
        "bytes_per_row": entry.path.stat().st_size / rows,
    }


def child_seed(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(a.repo).resolve()))  # runner from the checkout under test
    from runner.data.cache import FeatureCache, cache_key
    from runner.data.offline import config_digest, embedded_digest

    work = Path(a.workdir)
    extra = shlex.split(a.extra[0]) if a.extra else []
    probe_cfg = _compose(a.probe_rows, a.features, work / "probe" / "cache", extra)
    probe = _check_probe(probe_cfg, FeatureCache(str(work / "probe" / "cache")), work)
    cfg = _compose(a.rows, a.features, work / "seeded-cache", extra)
    version = _seed_version(cfg.data)
    key = cache_key({"sql": probe["source"]["query"], "identity": probe["identity"], "version": version})
    cache = FeatureCache(str(cfg.data.cache_dir))
    meta = {
        "query_ids": [],
        "source": {**probe["source"], "version": version},
        "seeded": "benchmarks/memory_large.py: the seed's rows computed by fakesnow in-process, no warehouse query",
    }
    others = [f for f in cache.root.glob("*/*.parquet") if f.stem != key]
    if others:
        size = sum(f.stat().st_size for f in others) / 1e9
        log(f"  note: {len(others)} other entries in {cache.root} ({size:.1f} GB), left as they are")
    reused, seconds = True, 0.0
    with cache.lock(key):
        hit = cache.get(key, decode=False)
        if hit is None or hit[0].num_rows != a.rows:
            reused = False
            need = probe["bytes_per_row"] * a.rows * 1.05
            free = shutil.disk_usage(cache.root).free
            if need > free:
                raise SystemExit(f"memory: ~{need / 1e9:.1f} GB needed in {cache.root}, {free / 1e9:.1f} GB free")
            started = time.perf_counter()
            cache.put(key, _rows_of(cfg.data, a.rows, a.seed_batch_rows, probe["schema"], True), meta)
            seconds = time.perf_counter() - started
    for digest in (config_digest(cfg.data), embedded_digest(cfg.data)):
        if digest:
            cache.remember(digest, key)
    print(
        json.dumps(
            {
                "key": key,
                "version": version,
                "rows": a.rows,
                "features": a.features,
                "probe_rows": a.probe_rows,
                "probe_key": probe["key"],
                "file_bytes": cache.path(key).stat().st_size,
                "reused": reused,
                "write_seconds": round(seconds, 1),
                "cache_dir": str(cache.root),
            }
        ),
        flush=True,
    )


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/_seeded_cache.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--features", type=int, required=True)
    p.add_argument("--probe-rows", type=int, default=1000)
    p.add_argument("--seed-batch-rows", type=int, default=50_000)
    p.add_argument("--workdir", required=True)
    p.add_argument("--extra", action="append", default=[])
    child_seed(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
