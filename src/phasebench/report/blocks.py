"""A small document model and its three renderers, so a report is written once and shown as HTML, Markdown or
rich terminal tables.

Blocks hold plain text (numbers already through ``fmt``); each renderer escapes for its medium: HTML entities,
Markdown's special characters, rich markup. ``clean`` first drops control characters and escape sequences from
every piece of text, since much of it came from servers, datasets or run folders.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..textsafe import clean
from . import fmt as F


@dataclass
class Table:
    """Rows of text under ``columns``; the first ``labels`` columns name the row, the rest are values.
    ``marked`` rows are the chosen ones (the point a plan or sweep goes on with), drawn in bold."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]]
    labels: int = 1
    marked: set[int] = field(default_factory=set)
    note: str | None = None
    left: bool = False          # every column left-aligned (tables of words)

    def compact(self) -> Table:
        """Without the rows whose values are all missing, and without the value columns that are."""
        keep = [i for i, r in enumerate(self.rows) if any(c != F.MISSING for c in r[self.labels:])]
        rows = [self.rows[i] for i in keep]
        cols = [j for j in range(len(self.columns))
                if j < self.labels or any(r[j] != F.MISSING for r in rows)]
        marked = {keep.index(i) for i in self.marked if i in keep}
        return Table(self.title, [self.columns[j] for j in cols], [[r[j] for j in cols] for r in rows], self.labels,
                     marked, self.note, self.left)


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    cls: str | None = None      # ok | bad | warn | lead | small


@dataclass
class Bullets:
    items: list[str]
    cls: str | None = None


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class Details:
    """Folded away in HTML (``<details>``); a collapsible section on GitHub's Markdown too."""

    summary: str
    blocks: list[Block]


Block = Heading | Para | Bullets | Table | Figure | Details


# --- HTML ------------------------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.4;overflow-wrap:anywhere}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em;margin:1.2em 0 .3em}
.tw{overflow-x:auto;max-width:100%;margin:.5em 0}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right;font-size:.9em;
overflow-wrap:normal}td{white-space:nowrap}
th{background:#f5f5f5}td.l,th.l{text-align:left;white-space:normal;min-width:7em}tr.m td{font-weight:600;background:#fff8d6}
caption{text-align:left;font-weight:600;padding:.2em 0;white-space:normal}
.ok{color:#11772b;font-weight:600}.bad{color:#b00020;font-weight:600}.warn{color:#8a5a00}li.bad{font-weight:400}
p.lead{font-size:1.1em}p.small{font-size:.85em;color:#555}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%;height:auto}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}
"""


def e(v: Any) -> str:
    """Outside text as HTML: control characters and escape sequences removed, then entity-escaped."""
    return html.escape(clean(v), quote=True)


def _cls(c: str | None) -> str:
    return f' class="{c}"' if c else ""


_NUMBER = re.compile(r"^[-+$]?[\d,.]+(%| ms| µs| s)?( ?/ ?[-+$]?[\d,.]+(%| ms)?)?$|^-$|^∞$")


def html_table(t: Table) -> str:
    """Numbers right-aligned and kept on one line; labels and words left-aligned, wrapping."""
    left = [t.left or j < t.labels for j in range(len(t.columns))]
    head = "".join(f'<th{_cls("l" if left[j] else None)}>{e(c)}</th>' for j, c in enumerate(t.columns))
    body = "".join(
        f"<tr{_cls('m' if i in t.marked else None)}>"
        + "".join(f'<td{_cls("l" if left[j] or not _NUMBER.match(c) else None)}>{e(c)}</td>' for j, c in enumerate(r))
        + "</tr>" for i, r in enumerate(t.rows))
    note = f'<p class="small">{e(t.note)}</p>' if t.note else ""
    return (f'<div class="tw"><table><caption>{e(t.title)}</caption><tr>{head}</tr>{body}</table></div>{note}'
            if t.title else f'<div class="tw"><table><tr>{head}</tr>{body}</table></div>{note}')


def html_block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p{_cls(b.cls)}>{e(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li{_cls(b.cls)}>{e(x)}</li>" for x in b.items) + "</ul>" if b.items else ""
    if isinstance(b, Table):
        return html_table(b) if b.rows else ""
    if isinstance(b, Figure):
        b64 = base64.b64encode(b.png).decode()
        return (f'<figure><img alt="{e(b.title)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    if isinstance(b, Details):
        return f"<details><summary>{e(b.summary)}</summary>" + "\n".join(html_block(x) for x in b.blocks) + "</details>"
    raise TypeError(f"not a report block: {type(b).__name__}")


def to_html(title: str, blocks: Iterable[Block]) -> str:
    """One self-contained page: inline CSS, images as data: URIs, no script."""
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
                      *(html_block(b) for b in blocks), "</body></html>"])


# --- Markdown --------------------------------------------------------------------------------------------
# parentheses stay as they are: with every bracket escaped no link or image can form around them
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~>-])")


def md_escape(v: Any) -> str:
    """Escape Markdown syntax and raw HTML in text that came from outside."""
    s = html.escape(clean(v), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_table(t: Table) -> list[str]:
    if not t.rows:
        return []
    out = [f"**{md_escape(t.title)}**", ""] if t.title else []
    out += ["| " + " | ".join(md_escape(c) for c in t.columns) + " |", "|" + "---|" * len(t.columns)]
    for i, r in enumerate(t.rows):
        cells = [md_escape(c) for c in r]
        if i in t.marked:
            cells = [f"**{c}**" if c else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return out + (["", f"*{md_escape(t.note)}*"] if t.note else []) + [""]


def md_block(b: Block, image_dir: str) -> list[str]:
    if isinstance(b, Heading):
        return ["#" * b.level + " " + md_escape(b.text), ""]
    if isinstance(b, Para):
        text = md_escape(b.text)
        return [f"**{text}**" if b.cls in ("ok", "bad", "lead") else text, ""]
    if isinstance(b, Bullets):
        return [f"- {md_escape(x)}" for x in b.items] + [""] if b.items else []
    if isinstance(b, Table):
        return md_table(b)
    if isinstance(b, Figure):
        path = f"{image_dir}/{b.key}.png" if image_dir else f"{b.key}.png"
        return [f"![{md_escape(b.title)}]({path})", "", f"*{md_escape(b.caption)}*", ""]
    if isinstance(b, Details):
        inner = [line for x in b.blocks for line in md_block(x, image_dir)]
        return [f"<details><summary>{e(b.summary)}</summary>", "", *inner, "</details>", ""]
    raise TypeError(f"not a report block: {type(b).__name__}")


def to_markdown(blocks: Iterable[Block], image_dir: str) -> str:
    return "\n".join(line for b in blocks for line in md_block(b, image_dir))


def figures(blocks: Iterable[Block]) -> list[Figure]:
    """Every figure, folded ones included (the Markdown writer saves them beside the file)."""
    out: list[Figure] = []
    for b in blocks:
        if isinstance(b, Figure):
            out.append(b)
        elif isinstance(b, Details):
            out += figures(b.blocks)
    return out


# --- terminal --------------------------------------------------------------------------------------------
def rich_table(t: Table):
    """The same table for the terminal: every cell stripped of markup and control characters, marked rows bold."""
    from rich.table import Table as RichTable

    from ..textsafe import markup

    rt = RichTable(title=markup(t.title) if t.title else None, title_justify="left", caption=markup(t.note) if t.note else None,
                   caption_justify="left")
    for j, c in enumerate(t.columns):
        if j < t.labels:  # a row's name (a step, a metric) is never cut: the value columns wrap first
            width = min(40, max((len(str(r[j])) for r in t.rows if j < len(r)), default=0))
            rt.add_column(markup(c), justify="left", no_wrap=True, min_width=width or None)
        else:
            rt.add_column(markup(c), justify="left" if t.left else "right")
    for i, r in enumerate(t.rows):
        rt.add_row(*(markup(c) for c in r), style="bold" if i in t.marked else None)
    return rt
