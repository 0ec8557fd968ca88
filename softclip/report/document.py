"""A tiny document model (headings, paragraphs, code, grids, images, links) rendered to Markdown and HTML.

The index page is built once as a list of blocks and rendered by both renderers, so ``report.md`` and
``report.html`` always say the same thing. Grid cells arrive already formatted for their target (a Markdown
grid holds Markdown, an HTML grid holds escaped HTML).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
       "table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 6px}"
       "td.r,th.r{text-align:right}small{color:#555}img{max-width:100%}pre{background:#f4f4f4;padding:0.5em}")  # fmt: skip


@dataclass(frozen=True)
class Grid:
    """A table of pre-formatted cells. ``align``: one ``l``/``r`` per column."""

    headers: list[str]
    rows: list[list[str]]
    align: str = ""

    def aligns(self) -> str:
        return (self.align or "l" * len(self.headers)).ljust(len(self.headers), "l")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Links:
    """Inline links ``(text, href)`` on one line, after an optional ``lead`` text."""

    links: list[tuple[str, str]]
    lead: str = ""


@dataclass(frozen=True)
class Image:
    href: str
    alt: str


@dataclass(frozen=True)
class Tables:
    """The same table twice: a Markdown grid and an HTML grid."""

    md: Grid
    html: Grid
    caption: str = ""


Block = Heading | Para | Code | Bullets | Links | Image | Tables


def md_escape(text: str) -> str:
    """Make plain text safe inside a Markdown table cell or line."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_grid(grid: Grid) -> str:
    """GitHub-flavoured Markdown table."""
    rule = {"l": ":--", "r": "--:"}
    lines = ["| " + " | ".join(grid.headers) + " |", "|" + "|".join(rule[a] for a in grid.aligns()) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in grid.rows]
    return "\n".join(lines)


def html_grid(grid: Grid, caption: str = "") -> str:
    """An HTML ``<table>`` (cells are inserted as given; headers are escaped)."""
    cls = [' class="r"' if a == "r" else "" for a in grid.aligns()]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for c, h in zip(cls, grid.headers, strict=True))
    body = "\n".join("<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(cls, row, strict=True)) + "</tr>"
                     for row in grid.rows)  # fmt: skip
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# ------------------------------------------------------------------------------------------ md renderers

MD: dict[type, Callable[[Block], str]] = {
    Heading: lambda b: "#" * b.level + " " + b.text,
    Para: lambda b: b.text,
    Code: lambda b: "```\n" + b.text + "\n```",
    Bullets: lambda b: "\n".join(f"- {item}" for item in b.items),
    Links: lambda b: (b.lead + " " if b.lead else "") + " · ".join(f"[{t}]({h})" for t, h in b.links),
    Image: lambda b: f"![{b.alt}]({b.href})",
    Tables: lambda b: (f"*{b.caption}*\n\n" if b.caption else "") + md_grid(b.md),
}

HTML: dict[type, Callable[[Block], str]] = {
    Heading: lambda b: f"<h{b.level}>{html.escape(b.text)}</h{b.level}>",
    Para: lambda b: f"<p>{html.escape(b.text)}</p>",
    Code: lambda b: f"<pre><code>{html.escape(b.text)}</code></pre>",
    Bullets: lambda b: "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>",
    Links: lambda b: "<p>" + (html.escape(b.lead) + " " if b.lead else "")
    + " · ".join(f'<a href="{html.escape(h)}">{html.escape(t)}</a>' for t, h in b.links) + "</p>",
    Image: lambda b: f'<p><img src="{html.escape(b.href)}" alt="{html.escape(b.alt)}"></p>',
    Tables: lambda b: html_grid(b.html, b.caption),
}


def render_md(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, separated by blank lines."""
    return "\n\n".join(MD[type(b)](b) for b in blocks) + "\n"


def html_page(title: str, body: str) -> str:
    """A standalone UTF-8 HTML page."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f"</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")  # fmt: skip


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as a standalone HTML page."""
    return html_page(title, "\n".join(HTML[type(b)](b) for b in blocks))


@dataclass
class Document:
    """An ordered list of blocks being assembled."""

    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self
