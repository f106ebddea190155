"""Building blocks of the reports: a self-contained page, tables, and matplotlib figures as inline SVG."""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Sequence

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       color: #1d2733; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #d9dee5; }
.sub { color: #5b6778; margin-top: 0; }
.verdict { display: inline-block; padding: 6px 14px; border-radius: 6px; font-weight: 600; margin: 6px 0; }
.ok { background: #dff3e4; color: #135c2a; } .bad { background: #fbe0e0; color: #8a1c1c; }
.neutral { background: #e8eef7; color: #1f3b66; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d9dee5; padding: 4px 10px; text-align: right; }
th { background: #f3f5f8; } td.l, th.l { text-align: left; }
.headline { display: flex; gap: 14px; flex-wrap: wrap; margin: 12px 0; }
.metric { border: 1px solid #d9dee5; border-radius: 8px; padding: 10px 16px; min-width: 130px; }
.metric .v { font-size: 1.5em; font-weight: 600; } .metric .k { color: #5b6778; font-size: 0.85em; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; } .figs svg { max-width: 100%; height: auto; }
ul.reasons li { margin: 2px 0; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:.{digits}f}"
    return str(value)


def page(title: str, subtitle: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>' + "\n".join(body) + "</body></html>\n"
    )


def verdict(text: str, kind: str) -> str:
    """kind: ok, bad or neutral."""
    return f'<div class="verdict {kind}" data-verdict="{esc(text)}">{esc(text)}</div>'


def headline(items: Sequence[tuple[str, object]]) -> str:
    cells = "".join(
        f'<div class="metric" data-metric="{esc(k)}"><div class="v">{esc(fmt(v))}</div>'
        f'<div class="k">{esc(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="headline">{cells}</div>'


def table(header: Sequence[str], rows: Iterable[Sequence], left: int = 1, css_id: str = "") -> str:
    """An HTML table; the first `left` columns are left-aligned (names), the rest numbers."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{esc(fmt(v))}</td>' for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    ident = f' id="{esc(css_id)}"' if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(width: float = 5.2, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def svg(fig) -> str:
    """The figure as inline SVG (text kept as text, no external references), and closed."""
    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "taxi"}):
        fig.tight_layout()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF boilerplate
    return text[text.index("<svg") :]  # drop the XML prolog and doctype for inline use


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
