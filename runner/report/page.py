"""The one-page report: a single HTML file, its charts embedded as data: URLs, no script and
no network access, so that it opens in the MLflow UI's artifact viewer and offline."""

from __future__ import annotations

import base64
import html
import numbers
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#1b1f24;max-width:1200px}
h1{font-size:1.4em;margin-bottom:.2em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}.charts img{max-width:560px;border:1px solid #eee}
figcaption{font-size:.8em;color:#57606a}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
.muted{color:#57606a;font-size:.9em}
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def number(value: Any) -> str:
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    return esc(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{number(v)}</td>' if isinstance(v, numbers.Number) else f"<td>{esc(v)}</td>" for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def facts(pairs: Iterable[Tuple[str, Any]]) -> str:
    return table(["", ""], pairs)


def charts(images: Dict[str, bytes], captions: Optional[Dict[str, str]] = None) -> str:
    figures = []
    for name, png in images.items():
        data = base64.b64encode(png).decode()
        caption = (captions or {}).get(name, name.rsplit(".", 1)[0].replace("_", " "))
        figures.append(
            f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'


def page(title: str, subtitle: str, sections: List[Tuple[str, str]]) -> str:
    """The HTML of the report: a title, then (heading, HTML fragment) sections in order."""
    body = "".join(f"<h2>{esc(h)}</h2>{fragment}" for h, fragment in sections if fragment)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{STYLE}</style></head>'
        f'<body><h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p>{body}</body></html>'
    )
