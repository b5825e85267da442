"""The demo report's Markdown as one self-contained HTML page: a small renderer for the constructs the report uses
(headings, tables, images, lists, paragraphs, bold, italic, inline code, links), no Markdown dependency.

Images are embedded as base64 `data:image/png` URIs, so report.html is one file that shows its pictures wherever it
is opened, copied or attached; report.md points at the same PNG files beside it. An image the Markdown names that
is missing or is not a PNG is refused in one line (a page with a broken picture is not written).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from pretrain.runtime.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADING = re.compile(r"^(#{1,6}) (.*)$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_TABLE_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.6em 0}th,td{border:1px solid #ccc;padding:0.25em 0.6em;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}"
    "code{background:#f3f3f3;padding:0 0.2em}"
)


def png_data_uri(path: Path, where: Path) -> str:
    """The PNG file at `path` as a data URI; missing or not a PNG: a one-line DataError naming `where`."""
    if not path.is_file():
        raise DataError(f"{where}: image '{path}' does not exist (expected a PNG beside the report)")
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise DataError(f"{where}: image '{path}' is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _inline(text: str, base: Path, where: Path) -> str:
    """Inline Markdown of one line or cell: code spans kept verbatim, then images, links, bold and italic."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1 and i < len(parts) - 1:  # inside a code span
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        part = html.escape(part if i % 2 == 0 else "`" + part, quote=False)

        def image(m: re.Match) -> str:
            src = png_data_uri(base / html.unescape(m.group(2)), where)
            return f'<img alt="{m.group(1).replace(chr(34), "&quot;")}" src="{src}">'

        part = _IMAGE.sub(image, part)
        part = _LINK.sub(lambda m: f'<a href="{m.group(2).replace(chr(34), "&quot;")}">{m.group(1)}</a>', part)
        part = _BOLD.sub(r"<strong>\1</strong>", part)
        out.append(_ITALIC.sub(r"<em>\1</em>", part))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """A table row's cells (`\\|` is a pipe inside a cell)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _table(lines: list[str], base: Path, where: Path) -> list[str]:
    """A pipe table: the first line is the header, the second the `|---|` rule."""
    head = "".join(f"<th>{_inline(c, base, where)}</th>" for c in _cells(lines[0]))
    body = [
        "<tr>" + "".join(f"<td>{_inline(c, base, where)}</td>" for c in _cells(line)) + "</tr>" for line in lines[2:]
    ]
    return ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"]


def _take(lines: list[str], i: int, starts: str) -> list[str]:
    """The run of lines from `i` that start with `starts`."""
    j = i
    while j < len(lines) and lines[j].startswith(starts):
        j += 1
    return lines[i:j]


def markdown_to_html(markdown: str, base: Path, where: Path) -> str:
    """The body HTML of `markdown`; images are read from paths relative to `base` (errors name `where`)."""
    lines, out, i = markdown.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        heading = _HEADING.match(line)
        if not line.strip():
            i += 1
        elif heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2), base, where)}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].replace(" ", "")):
            block = _take(lines, i, "|")
            out += _table(block, base, where)
            i += len(block)
        elif line.startswith("- "):
            block = _take(lines, i, "- ")
            out += ["<ul>", *(f"<li>{_inline(item[2:], base, where)}</li>" for item in block), "</ul>"]
            i += len(block)
        else:
            j = i + 1  # a paragraph runs to a blank line, a heading, a table or a list
            while j < len(lines) and lines[j].strip() and not _HEADING.match(lines[j]) and lines[j][0] not in "|-":
                j += 1
            out.append(f"<p>{_inline(' '.join(lines[i:j]), base, where)}</p>")
            i = j
    return "\n".join(out)


def write_html(markdown_path: Path, html_path: Path, title: str) -> Path:
    """report.html from report.md: one page, its images embedded (read from beside the Markdown file)."""
    body = markdown_to_html(markdown_path.read_text(), markdown_path.parent, markdown_path)
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    html_path.write_text(page)
    return html_path
