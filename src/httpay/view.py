"""What a person sees, described once and drawn three ways.

A model describes itself as a `View`: a title, columns, rows of cells, notes. The description is
neutral (plain text plus a style name such as "good" or "dim"), frozen, and knows nothing of any
model, so every model may build one without importing a renderer: `Invoice.__rich__` is
`self.view().to_rich()`, `Invoice._repr_html_` is `self.view().to_html()`. There is one renderer
per output kind, shared by every view:

- `View.to_rich()`: a rich table (and its notes) for a terminal;
- `View.to_html()`: an HTML table with a little inline CSS, readable in any notebook or page;
- `str(view)`: aligned plain text.

No renderer trusts a cell: every text passes `httpay.safe.clean` (one line, no control
characters, bounded) and is then shown as rich `Text` (never parsed as markup) or HTML-escaped.
A view that needs other columns in a narrow terminal carries a `narrow` variant; HTML and plain
text use the full one.

This module imports only `httpay.safe` and `httpay.amounts` (which import no model): it sits
below every model. The small text helpers here (`sat`, `amount`, `payable`, `status_cell`, the
default BTC/USD rate) are the ones several models' views share.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from httpay.amounts import rate_ok, sat_text, usd_text
from httpay.safe import MAX_TEXT, clean, plain

__all__ = [
    "COLOURS",
    "STATUS_TONE",
    "STYLES",
    "Cell",
    "Column",
    "Row",
    "View",
    "amount",
    "escape",
    "kv",
    "payable",
    "rate",
    "row",
    "sat",
    "set_usd_per_btc",
    "status_cell",
    "until",
    "usd",
]

# A style name -> (rich style, inline CSS). A cell, row or column names styles from here, space
# separated ("bold good"); "code" draws the text in <code> in HTML.
# The colours are GitHub's: readable on a light page and on a dark one.
COLOURS = {"good": "#1a7f37", "warn": "#9a6700", "bad": "#cf222e", "dim": "#57606a"}
STYLES: dict[str, tuple[str, str]] = {
    "good": ("green", f"color:{COLOURS['good']};font-weight:600"),
    "warn": ("yellow", f"color:{COLOURS['warn']};font-weight:600"),
    "bad": ("red", f"color:{COLOURS['bad']};font-weight:600"),
    "dim": ("dim", f"color:{COLOURS['dim']}"),
    "bold": ("bold", "font-weight:600"),
    "accent": ("cyan", ""),
    "code": ("", ""),
}

# The tone of each status a payment or an approval can be in.
STATUS_TONE = {"settled": "good", "pending": "warn", "failed": "bad",
               "waiting": "warn", "approved": "good", "denied": "bad", "expired": "dim", "abandoned": "dim"}

# Inline, so a table reads well where no stylesheet exists (GitHub's notebook preview, VS Code,
# an email): borders between rows, padding, alignment, numbers in even columns. No background,
# so a dark theme keeps its own.
_BORDER = "1px solid #d0d7de"
_TABLE_CSS = f"border-collapse:collapse;margin:4px 0;border:{_BORDER};font-size:13px"
_CELL_CSS = f"padding:3px 10px;vertical-align:top;border-bottom:{_BORDER}"
_HEAD_CSS = "padding:3px 10px;border-bottom:2px solid #8c959f;font-weight:600"
_KEY_CSS = f"font-weight:600;border-right:{_BORDER}"
_NUM_CSS = "text-align:right;font-variant-numeric:tabular-nums"
_NOTE_CSS = "padding:3px 10px;color:#57606a;font-size:90%"
_METER_WIDTH = 10


def _check(style: str) -> str:
    unknown = [s for s in style.split() if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown view style {unknown[0]!r}; known: {', '.join(STYLES)}")
    return style


def _rich_style(*styles: str) -> str:
    return " ".join(STYLES[s][0] for st in styles for s in st.split() if STYLES[s][0])


def _css(*styles: str) -> str:
    return ";".join(STYLES[s][1] for st in styles for s in st.split() if STYLES[s][1])


def escape(value: object, limit: int = 1000) -> str:
    """Text for HTML: one bounded line (`httpay.safe.clean`), then escaped (quotes too)."""
    return html.escape(clean(value, limit), quote=True)


@dataclass(frozen=True)
class Cell:
    """One piece of text in a view, with how to emphasise it.

    `hint` is extra detail shown on hover in HTML (a full timestamp, a description); `meter`, a
    fraction 0..1, draws a gauge before the text (`meter_width` characters in a terminal);
    `css_class` names the HTML element for pages that style it."""

    text: str = ""
    style: str = ""
    hint: str = ""
    meter: float | None = None
    meter_width: int = _METER_WIDTH
    css_class: str = ""
    limit: int = MAX_TEXT

    def __post_init__(self) -> None:
        _check(self.style)


@dataclass(frozen=True)
class Column:
    """A column: its label, alignment and style, and layout hints for a terminal (wrapping,
    width, share of spare room). A `key` column names its row (the field of a key/value view)."""

    label: str
    align: Literal["left", "right"] = "left"
    style: str = ""
    wrap: bool = True
    max_width: int | None = None
    min_width: int | None = None  # kept on a narrow terminal: the column that says what it is about
    ratio: int | None = None
    overflow: Literal["fold", "crop", "ellipsis"] = "ellipsis"
    hint: str = ""
    key: bool = False

    def __post_init__(self) -> None:
        _check(self.style)


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    style: str = ""
    css_class: str = ""

    def __post_init__(self) -> None:
        _check(self.style)


def row(*cells: Cell | str, style: str = "", css_class: str = "") -> Row:
    """A row from cells or plain strings (a string is a cell with no style)."""
    return Row(tuple(c if isinstance(c, Cell) else Cell(c) for c in cells), style, css_class)


@dataclass(frozen=True)
class View:
    """A table a person reads: the one description every renderer draws.

    `notes` are lines said under the table; `empty` is said instead of rows when there are none.
    `narrow`, when set, is the view a terminal narrower than `narrow_below` columns shows instead
    (fewer columns, shorter amounts); HTML and plain text always show this one. `dense` draws a
    terminal table without outer borders; `name` is the HTML class (`httpay-<name>`)."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...] = ()
    notes: tuple[Cell, ...] = ()
    empty: str = ""
    header: bool = True
    dense: bool = False
    name: str = "view"
    narrow: View | None = field(default=None, repr=False)
    narrow_below: int = 0

    def __post_init__(self) -> None:
        for r in self.rows:
            if len(r.cells) != len(self.columns):
                raise ValueError(f"a row of {len(r.cells)} cells in a view of {len(self.columns)} columns")

    def fitting(self, width: int) -> View:
        """The variant for a terminal `width` columns wide."""
        if self.narrow is not None and width < self.narrow_below:
            return self.narrow.fitting(width)
        return self

    # -- the three renderers ------------------------------------------------------------------------
    def to_rich(self) -> RichView:
        """A rich renderable: the table that fits the console, then the notes."""
        return RichView(self)

    def to_html(self) -> str:
        """An HTML table, every text escaped, styled inline so any renderer shows it readably."""
        return _html(self)

    def __str__(self) -> str:
        return "\n".join(_plain_lines(self))

    def __rich__(self) -> RichView:
        return self.to_rich()

    def _repr_html_(self) -> str:
        return self.to_html()


class RichView:
    """A `View` drawn by rich, choosing its variant by the console's width at print time."""

    def __init__(self, view: View) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        v = self.view.fitting(options.max_width)
        yield rich_table(v)
        if not v.rows and v.empty:  # under the table, not its caption: a caption wraps to the empty table's width
            yield plain(v.empty, 300)
        for note in v.notes:
            yield _text(note)


def _meter_text(fraction: float, width: int) -> Text:
    full = round(min(max(fraction, 0.0), 1.0) * width)
    tone = _meter_tone(fraction)
    return Text("█" * full, style=STYLES[tone][0]) + Text("░" * (width - full), style="dim")


def _meter_tone(fraction: float) -> str:
    return "bad" if fraction >= 0.9 else "warn" if fraction >= 0.6 else "good"


def _text(c: Cell) -> Text:
    shown: Text = plain(c.text, c.limit, style=_rich_style(c.style))
    if c.meter is None:
        return shown
    return _meter_text(c.meter, c.meter_width) + Text(" ") + shown


def rich_table(v: View) -> Table:
    """The rich table of `v` (without its notes and empty text): every cell a plain `Text`, never markup."""
    t = Table(title=plain(v.title, 300), title_justify="left", show_header=v.header)
    if v.dense:  # no outer border and no padding at the edges: more room for the columns
        t.box, t.pad_edge, t.show_edge, t.padding = box.SIMPLE_HEAD, False, False, (0, 1, 0, 0)
    for col in v.columns:
        t.add_column(plain(col.label, 80), justify=col.align, style=_rich_style(col.style, "bold" if col.key else ""),
                     no_wrap=not col.wrap, max_width=col.max_width, min_width=col.min_width, ratio=col.ratio,
                     overflow=col.overflow)
    for r in v.rows:
        t.add_row(*(_text(c) for c in r.cells), style=_rich_style(r.style) or None)
    return t


def _html_cell(col: Column, c: Cell, row_style: str) -> str:
    tag = "th" if col.key else "td"
    css = [_CELL_CSS]
    if col.align == "right":
        css.append(_NUM_CSS)
    elif col.key:
        css.append("text-align:left")
    if col.key:
        css.append(_KEY_CSS)
    if not col.wrap:
        css.append("white-space:nowrap")
    css.append(_css(col.style, row_style))
    hint = f" title='{escape(c.hint)}'" if c.hint else ""
    body = escape(c.text, c.limit)
    if "code" in col.style.split() or "code" in c.style.split():
        body = f"<code>{body}</code>"
    style = _css(c.style)
    if style or c.css_class:
        cls = f" class='{escape(c.css_class, 200)}'" if c.css_class else ""
        body = f"<span{cls}" + (f" style='{style}'" if style else "") + f">{body}</span>"
    if c.meter is not None:
        used = min(max(c.meter, 0.0), 1.0)
        colour = COLOURS[_meter_tone(used)]
        body = (f"<div class='httpay-meter' style='display:inline-block;width:90px;height:8px;background:#eaeef2;"
                f"border-radius:4px;vertical-align:middle'><div style='width:{used * 100:.1f}%;height:8px;"
                f"border-radius:4px;background:{colour}'></div></div> {body}")
    return f"<{tag} style='{';'.join(x for x in css if x)}'{hint}>{body}</{tag}>"


def _note_css(n: Cell) -> str:
    return ";".join(x for x in (_NOTE_CSS, _css(n.style)) if x)


def _html(v: View) -> str:
    span = max(len(v.columns), 1)
    parts = [f"<table class='httpay-view httpay-{escape(v.name, 60)}' style='{_TABLE_CSS}'>",
             f"<caption style='text-align:left;caption-side:top;padding:2px 0 4px'><b>{escape(v.title)}</b></caption>"]
    if v.header:
        heads = "".join(
            f"<th style='{_HEAD_CSS};text-align:{c.align}{'' if c.wrap else ';white-space:nowrap'}'"
            + (f" title='{escape(c.hint)}'" if c.hint else "") + f">{escape(c.label)}</th>" for c in v.columns)
        parts.append(f"<thead><tr>{heads}</tr></thead>")
    body = []
    for r in v.rows:
        cls = f" class='{escape(r.css_class, 200)}'" if r.css_class else ""
        body.append(f"<tr{cls}>" + "".join(_html_cell(col, c, r.style) for col, c in zip(v.columns, r.cells, strict=True))
                    + "</tr>")
    if not v.rows and v.empty:
        body.append(f"<tr><td colspan='{span}' style='{_NOTE_CSS}'>{escape(v.empty)}</td></tr>")
    parts.append("<tbody>" + "".join(body) + "</tbody>")
    if v.notes:
        notes = "".join(f"<tr class='httpay-note'><td colspan='{span}' style='{_note_css(n)}'>"
                        f"{escape(n.text.strip(), n.limit)}</td></tr>" for n in v.notes)
        parts.append(f"<tfoot>{notes}</tfoot>")
    parts.append("</table>")
    return "".join(parts)


def _plain_cell(c: Cell) -> str:
    text = clean(c.text, c.limit)
    if c.meter is None:
        return text
    full = round(min(max(c.meter, 0.0), 1.0) * c.meter_width)
    return "█" * full + "░" * (c.meter_width - full) + " " + text


def _plain_lines(v: View) -> Iterator[str]:
    yield clean(v.title, 300)
    grid = [[_plain_cell(c) for c in r.cells] for r in v.rows]
    if v.header:
        grid.insert(0, [clean(c.label, 80) for c in v.columns])
    widths = [max((len(line[i]) for line in grid), default=0) for i in range(len(v.columns))]
    for n, line in enumerate(grid):
        cells = [text.rjust(w) if col.align == "right" else text.ljust(w)
                 for text, w, col in zip(line, widths, v.columns, strict=True)]
        yield "  ".join(cells).rstrip()
        if n == 0 and v.header:
            yield "  ".join("-" * w for w in widths)
    if not v.rows and v.empty:
        yield clean(v.empty, 300)
    yield from (clean(n.text, n.limit) for n in v.notes)


def kv(title: str, pairs: Iterable[tuple[str, str | Cell]], name: str = "kv") -> View:
    """A key/value view (an invoice, a payment request, a receipt): one row per field, no header."""
    return View(title, (Column("field", key=True), Column("value")),
                tuple(row(k, v) for k, v in pairs), header=False, name=name)


# -- text the views of several models share ----------------------------------------------------------
_default_rate: float | None = None


def set_usd_per_btc(rate: float | None) -> None:
    """Set the BTC/USD rate every view uses when none is passed (None: show sat only)."""
    global _default_rate
    if rate is not None and not rate_ok(rate):
        raise ValueError("the BTC/USD rate must be a finite positive number")
    _default_rate = rate


def rate(usd_per_btc: float | None) -> float | None:
    """The rate a view uses: the one given when usable, else the default; an inf or NaN rate is
    no rate (never "$inf")."""
    return usd_per_btc if rate_ok(usd_per_btc) else _default_rate


def sat(msat: int | None) -> str:
    return "—" if msat is None else sat_text(msat)


def usd(msat: int | None, usd_per_btc: float | None) -> str | None:
    if msat is None or not rate_ok(usd_per_btc):
        return None
    return usd_text(msat, usd_per_btc, small_places=4)


def amount(msat: int | None, usd_per_btc: float | None) -> str:
    """'10 sat ≈ $0.0100', or 'no amount'."""
    if msat is None:
        return "no amount"
    in_usd = usd(msat, usd_per_btc)
    return f"{sat(msat)} sat" + (f" ≈ {in_usd}" if in_usd else "")


def until(when: datetime, now: datetime | None = None) -> str:
    """'in 35 min' / 'expired 2 min ago': how soon a person must act."""
    now = now or datetime.now(UTC)
    secs = (when - now).total_seconds()
    span = abs(secs)
    text = f"{span:.0f} s" if span < 90 else f"{span / 60:.0f} min" if span < 5400 else f"{span / 3600:.1f} h"
    return f"in {text}" if secs > 0 else f"expired {text} ago"


def payable(expires_at: datetime) -> str:
    """'payable for 35 min' / 'expired 2 min ago'."""
    left = until(expires_at)
    return left if left.startswith("expired") else f"payable for {left.removeprefix('in ')}"


def status_cell(status: str) -> Cell:
    """A payment's or an approval's status, in its tone (green settled, red failed...)."""
    return Cell(status, style=STATUS_TONE.get(status, ""), css_class=f"httpay-status httpay-{status}", limit=20)
