"""One self-standing HTML page with every table and plot of a benchmark report (no scripts, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from secateurs.reporting.tables import Table

__all__ = ["render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .caption { color: #555; font-size: 0.9em; }
.env p { margin: 0.2em 0; font-size: 0.85em; color: #444; } .env p.warning { color: #a40; font-weight: bold; }
"""


def render_html(tables: Sequence[Table], *, title: str, description: str = "",
                failures: Sequence[dict[str, Any]] = (), images: Sequence[tuple[str, str]] = ()) -> str:
    """The report page: ``images`` are ``(relative path, caption)`` pairs shown after the tables."""
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    if description:
        parts.append(f"<p>{escape(description.strip())}</p>")
    for table in tables:
        parts.append(f"<h2>{escape(table.title)}</h2>")
        if table.caption:
            parts.append(f"<p class='caption'>{escape(table.caption)}</p>")
        parts.append(_table(table))
        if table.notes:
            parts.append("<div class='env'>" + "".join(
                f"<p class='{'warning' if n.startswith('Warning') else 'note'}'>{escape(n)}</p>" for n in table.notes)
                + "</div>")
    if failures:
        parts.append("<h2>Cells without a result</h2><ul>")
        parts += [f"<li><code>{escape(str(f['cell']))}</code>: {escape(str(f.get('status')))}: "
                  f"{escape(str(f.get('error', '')))}</li>" for f in failures]
        parts.append("</ul>")
    if images:
        parts.append("<h2>Plots</h2>")
        parts += [f"<figure><img src='{escape(path)}' alt='{escape(caption)}'>"
                  f"<figcaption>{escape(caption)}</figcaption></figure>" for path, caption in images]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
