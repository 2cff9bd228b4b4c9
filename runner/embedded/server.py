"""The embedded warehouse's server: fakesnow, answering large results in chunks as Snowflake does.

fakesnow 0.12 answers every query result as one base64 Arrow blob inside the JSON response.
Snowflake sends the first rows inline and the rest as a list of chunk URLs that the
connector downloads (several at a time) and hands out batch by batch: the path
`fetch_arrow_batches` / Snowpark's `to_arrow_batches` stream through. This server runs
fakesnow's own app with its query route wrapped: a result larger than a quarter of
--chunk-bytes keeps that much inline and is cut into chunks of --chunk-bytes, doubling up
to 16 MiB (Snowflake's chunks grow the same way), served from
GET /runner-chunks/<query id>/<n> as Arrow IPC streams (what the connector reads from a
chunk's body). Chunks are zero-copy slices of the result fakesnow keeps for RESULT_SCAN;
both are forgotten once the result falls out of the last few queries.

    python -m runner.embedded.server --port PORT [--chunk-bytes N]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pyarrow as pa

if TYPE_CHECKING:
    from starlette.applications import Starlette

KEEP_RESULTS = 8  # results (and their chunks) kept per server: RESULT_SCAN reads the last one
DEFAULT_CHUNK_BYTES = 256 << 10
MAX_CHUNK_BYTES = 16 << 20

_slices: contextvars.ContextVar[Optional[List[pa.Table]]] = contextvars.ContextVar("runner_chunks", default=None)


class Chunks:
    """Chunks of recent results, by query id, and the split of a result into them."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = max(1, chunk_bytes)
        self.by_query: Dict[str, List[pa.Table]] = {}
        self.lock = threading.Lock()

    def bounds(self, table: pa.Table) -> List[int]:
        """Row offsets where chunks start: the inline rows first, then growing chunks."""
        per_row = max(1, table.nbytes // max(1, table.num_rows))
        start, size, out = max(1, self.chunk_bytes // 4 // per_row), self.chunk_bytes, [0]
        while start < table.num_rows:
            out.append(start)
            start += max(1, size // per_row)
            size = min(2 * size, MAX_CHUNK_BYTES)
        return out

    def inline_ipc(self, table: pa.Table) -> pa.Buffer:
        """fakesnow's to_ipc, cut: the inline rows as IPC bytes; the chunks noted for the response."""
        pending = _slices.get()
        starts = self.bounds(table) if pending is not None else [0]
        if len(starts) == 1:
            return _ipc(table)
        ends = starts[1:] + [table.num_rows]
        assert pending is not None
        pending.extend(table.slice(a, b - a) for a, b in zip(starts[1:], ends[1:], strict=True))
        return _ipc(table.slice(0, starts[1]))

    def keep(self, query_id: str, slices: List[pa.Table], results_cache: Dict[str, Any]) -> None:
        with self.lock:
            self.by_query[query_id] = slices
            for old in list(self.by_query)[:-KEEP_RESULTS]:
                del self.by_query[old]
        # fakesnow keeps every result for RESULT_SCAN, unbounded: keep the recent ones.
        for old in list(results_cache)[:-KEEP_RESULTS]:
            results_cache.pop(old, None)

    def get(self, query_id: str, index: int) -> Optional[pa.Table]:
        with self.lock:
            slices = self.by_query.get(query_id)
        return slices[index] if slices is not None and 0 <= index < len(slices) else None


def _ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


UNSUPPORTED_CODE = "261000"
LOCAL_DATA_ADVICE = (
    "local rows: data.files / data.path load CSV or Parquet files as tables; in a feature function, "
    "session.sql('create table ... as select ...') and DataFrame.write.save_as_table work, "
    "Session.create_dataframe and write_pandas do not"
)


def unsupported(body: Dict[str, Any]) -> str:
    """One line for a statement fakesnow failed on: what, and what to use instead."""
    text = str(body.get("message") or "")
    sql = text.split("sql_text=", 1)[-1].split(" params=", 1)[0].strip("'\"")
    sql = " ".join(sql.split())
    return (
        f"the embedded warehouse (fakesnow) cannot run this statement (an emulator limit; its log has the "
        f"traceback): {sql[:200]}{'...' if len(sql) > 200 else ''} ({LOCAL_DATA_ADVICE})"
    )


def build_app(chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Starlette:
    import fakesnow.server as fs
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    chunks = Chunks(chunk_bytes)
    fs.to_ipc = chunks.inline_ipc  # the query route's only serializer of result rows

    async def query_request(request: Request) -> Response:
        pending: List[pa.Table] = []
        token = _slices.set(pending)
        try:
            response = await fs.query_request(request)
        finally:
            _slices.reset(token)
        body = json.loads(bytes(response.body))
        if response.status_code == 500:
            # fakesnow cannot run the statement (its traceback is in the log). Snowflake answers
            # a failed statement with success=false, which the connector raises at once; an HTTP
            # 500 it retries until network_timeout (60 s).
            return JSONResponse(
                {"data": None, "code": UNSUPPORTED_CODE, "message": unsupported(body), "success": False}
            )
        data = body.get("data") or {}
        query_id = data.get("queryId")
        conn = fs.sessions.get(fs.to_token(request)) if body.get("success") else None
        if conn is None or not query_id:
            return response
        chunks.keep(query_id, pending, conn.results_cache)
        if not pending:
            return response
        base = f"{request.url.scheme}://{request.url.netloc}/runner-chunks/{query_id}"
        data["chunks"] = [
            {"url": f"{base}/{i}", "rowCount": p.num_rows, "uncompressedSize": p.nbytes, "compressedSize": p.nbytes}
            for i, p in enumerate(pending)
        ]
        return JSONResponse(body)

    async def chunk(request: Request) -> Response:
        part = chunks.get(request.path_params["qid"], int(request.path_params["n"]))
        if part is None:
            return Response(status_code=404)
        payload = await run_in_threadpool(_ipc, part)
        return Response(payload.to_pybytes(), media_type="application/octet-stream")

    routes = [
        Route(r.path, query_request, methods=["POST"]) if r.path == "/queries/v1/query-request" else r
        for r in fs.routes
    ]
    routes.append(Route("/runner-chunks/{qid}/{n:int}", chunk, methods=["GET"]))
    return Starlette(routes=routes)


def main(argv: Optional[List[str]] = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m runner.embedded.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="target size of a result chunk")
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.chunk_bytes), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
