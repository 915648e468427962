"""`httpay dashboard`: one local page where a person watches an agent's spending and answers its
approval requests.

It shows the ledger (recent payments, coloured by status), the policy's budgets (spent vs each
limit), spend over time (an SVG drawn here: no CDN, no network) and the approvals waiting in
the queue, with Approve / Deny buttons. It listens on loopback only and every request must
carry the random token printed at start (`/?token=...`), compared in constant time. It never
renders a secret: no preimage, no key, no bearer token, and URL query values that look like
credentials are masked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

from httpay.extras import require

require("dashboard")

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from httpay.amounts import fmt_msat, sat_text
from httpay.apps.approvals import Approval, ApprovalQueue, unfit_note
from httpay.apps.display import STATUS_COLOUR, budget_lines, html_budget, html_receipts
from httpay.errors import ApprovalError, ApprovalExpired, ConfigError, HttpayError
from httpay.ledger import Ledger, Receipt, open_ledger
from httpay.ledger.models import refusals_view
from httpay.loopback import listen, url_of
from httpay.policy import Policy
from httpay.safe import SECRET_WORDS, URL_IN_TEXT, clean, digits, safe_url, short_url
from httpay.view import escape as _e
from httpay.wallets.base import Wallet

__all__ = ["SECRET_WORDS", "Dashboard", "RunningDashboard", "create_app", "run", "safe_url", "serve_in_thread",
           "short_url", "spend_svg"]

BUDGET_RANGE = 4.0  # a budget line is drawn when it is at most this many times what the chart shows


def _nice_step(span: float, ticks: int = 4) -> int:
    """A round step (1, 2, 2.5 or 5 times a power of ten msat) giving about `ticks` gridlines."""
    raw = max(span / ticks, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return max(int(m * power), 1)
    return int(10 * power)  # pragma: no cover - the loop always returns


def spend_svg(receipts: list[Receipt], *, width: int = 1000, height: int = 190, budget_msat: int | None = None,
              usd_per_btc: float | None = None, now: datetime | None = None, budget_name: str = "budget",
              complete: bool = True) -> str:
    """Cumulative money committed (settled + pending) over time, as an inline SVG step line.

    The amount axis fits the payments drawn (round gridlines up to just above their total), so a
    few sat read as clearly as a million. A budget is drawn as a line when it is within
    `BUDGET_RANGE` of that total; a budget far above it would flatten the spend into the floor,
    so it is said in a note instead. `complete=False` (only the newest rows are drawn) draws no
    budget: the curve does not start at zero spent."""
    rs = sorted((r for r in receipts if r.status.value != "failed"), key=lambda r: r.created_at)
    if not rs:
        return "<p class='none'>no payments yet</p>"
    now = now or datetime.now(UTC)
    left, right, top, bottom = 90, 12, 14, 26
    t1 = max(now.timestamp(), rs[-1].created_at.timestamp())
    t0 = min(rs[0].created_at.timestamp(), t1 - 3600)  # at least the last hour, so the steps read as steps
    span = max(t1 - t0, 1.0) * 1.02
    total = sum(r.total_msat for r in rs)
    draw_budget = bool(budget_msat) and complete and budget_msat is not None and budget_msat <= max(total, 1) * BUDGET_RANGE
    peak = max(total, budget_msat or 0) if draw_budget else total
    step = _nice_step(max(peak, 1) * 1.05)
    ymax = max(math.ceil(max(peak, 1) * 1.05 / step), 1) * step
    w, h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / span * w

    def y(msat: float) -> float:
        return top + h - msat / ymax * h

    points = [(x(t0), y(0))]
    dots = []
    acc = 0
    for r in rs:
        px = x(r.created_at.timestamp())
        points.append((px, y(acc)))
        acc += r.total_msat
        points.append((px, y(acc)))
        colour = STATUS_COLOUR.get(r.status.value, "#57606a")
        dots.append(f"<circle cx='{px:.1f}' cy='{y(acc):.1f}' r='3.5' fill='{colour}'>"
                    f"<title>#{r.id} {_e(r.status.value)} {_e(fmt_msat(r.total_msat, usd_per_btc))} at {_e(r.when)} UTC"
                    f"{' · ' + _e(short_url(r.url)) if r.url else ''}</title></circle>")
    points.append((x(t1), y(acc)))
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
    parts = [
        (f"<svg class='httpay-chart' role='img' aria-label='spend over time' data-ymax-msat='{ymax}' "
         f"data-total-msat='{total}' viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg' "
         f"font-size='11' fill='#57606a'>"),
        f"<line x1='{left}' y1='{top + h}' x2='{left + w}' y2='{top + h}' stroke='#d0d7de'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + h}' stroke='#d0d7de'/>",
        f"<text x='{left}' y='{height - 6}'>{datetime.fromtimestamp(t0, UTC):%m-%d %H:%M} UTC</text>",
        f"<text x='{left + w}' y='{height - 6}' text-anchor='end'>now ({datetime.fromtimestamp(t1, UTC):%H:%M} UTC)</text>",
    ]
    for tick in range(0, ymax + 1, step):
        ty = y(tick)
        if tick:
            parts.append(f"<line class='grid' x1='{left}' y1='{ty:.1f}' x2='{left + w}' y2='{ty:.1f}' stroke='#eaeef2'/>")
        parts.append(f"<text class='tick' x='{left - 6}' y='{ty + 4:.1f}' text-anchor='end'>"
                     f"{_e(sat_text(tick))}{' sat' if tick else ''}</text>")
    parts.append(f"<text class='total' x='{x(t1) - 4:.1f}' y='{max(y(acc) - 6, top + 10):.1f}' text-anchor='end' "
                 f"fill='#0969da'>{_e(fmt_msat(acc, usd_per_btc))}</text>")
    if draw_budget and budget_msat is not None:
        parts.append(f"<line class='budget' x1='{left}' y1='{y(budget_msat):.1f}' x2='{left + w}' y2='{y(budget_msat):.1f}' "
                     f"stroke='#cf222e' stroke-dasharray='5 4'/><text x='{left + 6}' y='{y(budget_msat) - 4:.1f}' "
                     f"fill='#cf222e'>{_e(budget_name)} {_e(fmt_msat(budget_msat))}</text>")
    parts.append(f"<polyline points='{line}' fill='none' stroke='#0969da' stroke-width='2'/>")
    parts.extend(dots)
    parts.append("</svg>")
    note = ""
    if budget_msat and not draw_budget:
        if not complete:
            note = f"The {_e(budget_name)} ({_e(fmt_msat(budget_msat, usd_per_btc))}) is not drawn: only the newest payments are."
        else:
            used = total / budget_msat
            note = (f"The {_e(budget_name)} ({_e(fmt_msat(budget_msat, usd_per_btc))}) is far above this spend "
                    f"({'<1%' if used < 0.01 else f'{used:.0%}'} of it used), so it is not drawn: the scale fits the payments.")
    return "".join(parts) + (f"<p class='none' id='chart-note'>{note}</p>" if note else "")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f8fa;color:#1f2328}
header{background:#24292f;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0} header .muted{color:#afb8c1;font-size:12px}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:minmax(0,1fr) minmax(0,1fr)}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;overflow-x:auto}
section.wide{grid-column:1/-1} h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%} caption{display:none}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left;white-space:nowrap} th{font-size:12px;color:#57606a}
code{font-size:12px} .cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:110px}
.card b{display:block;font-size:18px} .card span{font-size:12px;color:#57606a}
.approval{border:2px solid #d4a72c;background:#fff8c5;border-radius:8px;padding:10px 14px;margin:8px 0;
display:flex;gap:16px;align-items:center;justify-content:space-between;flex-wrap:wrap}
.approval .what b{font-size:15px} .approval .meta{font-size:12px;color:#57606a}
.approval.gone{border:1px dashed #d0d7de;background:#f6f8fa;color:#57606a}
.approval form{display:inline} button{font:inherit;font-weight:600;border-radius:6px;padding:6px 16px;cursor:pointer;border:1px solid}
button.approve{background:#1f883d;color:#fff;border-color:#1a7f37} button.approve-other{color:#1a7f37;border-color:#1a7f37} .others{margin-top:.4em} button.deny{background:#fff;color:#cf222e;border-color:#cf222e}
.none{color:#57606a} .httpay-meter{display:inline-block;width:90px;height:8px;background:#eaeef2;border-radius:4px;vertical-align:middle}
.httpay-meter div{height:8px;border-radius:4px} .flash{grid-column:1/-1;padding:8px 12px;border-radius:6px;background:#dafbe1}
.flash.bad{background:#ffebe9} svg.httpay-chart{width:100%;height:auto;max-height:220px;display:block}
.none.bad{color:#cf222e} .pages a{margin-right:4px} a.tag-filter{color:#0969da;text-decoration:none}
tr.tag-row.on td{font-weight:600} tr.tag-row.on a.tag-filter{color:#1f2328} #tag-filter{margin-right:8px}
.httpay-url{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
table.httpay-view td{white-space:normal} /* a view says per column what must not wrap, inline */
td:has(> .httpay-url){max-width:210px;overflow:hidden;text-overflow:ellipsis} td:has(> .httpay-reason){min-width:150px}
#tags-table{width:auto;min-width:50%}
@media (max-width:900px){main{grid-template-columns:1fr}}
"""

SCRIPT = """
(function(){
  // the page's own query (token, ?before, ?rbefore, ?tag): a refresh redraws what this page shows
  const query = new URLSearchParams(location.search);
  const keep = new URLSearchParams();
  for (const k of ['token', 'before', 'rbefore', 'tag']) { const v = query.get(k); if (v !== null) keep.set(k, v); }
  async function refresh(){
    try {
      const r = await fetch('/api/state?' + keep.toString(), {cache:'no-store'});
      if (!r.ok) return;
      const s = await r.json();
      for (const [id, sec] of Object.entries(s.sections)) {
        const el = document.getElementById(id);
        if (el && el.dataset.v !== sec.v) { el.innerHTML = sec.html; el.dataset.v = sec.v; }
      }
      document.title = (s.waiting ? '(' + s.waiting + ') ' : '') + 'httpay dashboard';
    } catch (e) {}
  }
  setInterval(refresh, %d);
})();
"""


_OPAQUE_WORD = re.compile(r"[A-Za-z0-9_\-+=]{24,}")


def _unkeyed(text: str) -> str:
    """`text` with every long word of letters and digits (a key, a macaroon, a token) as `***`."""
    return _OPAQUE_WORD.sub(lambda m: "***" if re.search(r"\d", m.group()) and re.search(r"[A-Za-z]", m.group())
                            else m.group(), text)


def wallet_error_text(wallet: Wallet, exc: BaseException) -> str:
    """What a failed balance read says to a person: httpay's own message (URLs masked, long opaque
    words that may be keys cut out), or for anything else only its kind. Never a traceback."""
    if isinstance(exc, NotImplementedError):
        return f"the {wallet.name} wallet cannot tell its balance"
    if isinstance(exc, HttpayError):
        text = URL_IN_TEXT.sub(lambda m: safe_url(m.group()), str(exc))
        text = _unkeyed(text)
        return f"the {wallet.name} wallet did not tell its balance: {clean(text, 300)}"
    return (f"the {wallet.name} wallet did not tell its balance ({type(exc).__name__}); "
            "check its settings (HTTPAY_WALLET and its variables) and that it is reachable")


class BalanceCache:
    """The wallet's balance for the page, read in a background thread at most every `every_s`
    seconds: a page or a live refresh never waits for the wallet, a slow or broken wallet shows as a
    note, and many open tabs do not hammer it."""

    def __init__(self, wallet: Wallet | None, *, every_s: float = 5.0, note: str | None = None) -> None:
        self.wallet, self.every_s = wallet, every_s
        self.balance_msat: int | None = None
        self.read_at: datetime | None = None   # when the balance shown was read
        self.error: str | None = note          # why the last read failed (or why there is no wallet)
        self.reads = 0                          # reads started: a person asking "how often?" gets a number
        self.updated = threading.Event()        # set after each read (tests and the screenshot wait on it)
        self._lock = threading.Lock()
        self._busy = False
        self._started = -math.inf

    def refresh_soon(self) -> None:
        """Start a read unless one is running or the last began under `every_s` seconds ago."""
        if self.wallet is None:
            return
        with self._lock:
            now = time.monotonic()
            if self._busy or now - self._started < self.every_s:
                return
            self._busy, self._started = True, now
            self.reads += 1
        threading.Thread(target=self._read, name="httpay-dashboard-balance", daemon=True).start()

    def _read(self) -> None:
        assert self.wallet is not None
        try:
            msat = self.wallet.balance_msat()
            if isinstance(msat, bool) or not isinstance(msat, int) or msat < 0:
                raise HttpayError(f"the wallet answered {type(msat).__name__}, not a balance in msat")
            with self._lock:
                self.balance_msat, self.read_at, self.error = msat, datetime.now(UTC), None
        except BaseException as exc:  # noqa: BLE001 - any failure is a note on the page, never a traceback
            with self._lock:
                self.error = wallet_error_text(self.wallet, exc)
        finally:
            with self._lock:
                self._busy = False
            self.updated.set()

    def card(self, rate: float | None) -> tuple[str, str, str | None]:
        """(value, label, note) for the overview."""
        if self.wallet is None:
            return "—", "no wallet configured", self.error or (
                "no wallet configured: set HTTPAY_WALLET (and its variables) before `httpay dashboard`, "
                "or pass create_app(wallet=...), to see its balance")
        with self._lock:
            msat, at, error = self.balance_msat, self.read_at, self.error
        label = f"wallet balance · {self.wallet.name} on {self.wallet.network}"
        if msat is None:
            return ("unknown" if error else "reading…"), label, error
        age = max((datetime.now(UTC) - at).total_seconds(), 0) if at else 0
        return fmt_msat(msat, rate), f"{label} · read {age:.0f} s ago", error


@dataclass(frozen=True)
class Where:
    """Which part of the history a page shows: the ledger page (`before`), the refusals page
    (`rbefore`) and a tag filter (`tag`), all kept in every link and in the live refresh."""

    before: int | None = None
    rbefore: int | None = None
    tag: tuple[str, str] | None = None

    def link(self, token: str, **change: Any) -> str:
        w = replace(self, **change)
        q = [("token", token)]
        if w.tag:
            q.append(("tag", f"{w.tag[0]}={w.tag[1]}"))
        if w.before is not None:
            q.append(("before", str(w.before)))
        if w.rbefore is not None:
            q.append(("rbefore", str(w.rbefore)))
        return _e("/?" + urlencode(q), 3000)


@dataclass
class Dashboard:
    """What the page reads: the ledger, the approval queue (None when unavailable), the policy,
    the wallet's balance (cached)."""

    ledger: Ledger
    queue: ApprovalQueue | None
    policy: Policy | None
    usd_per_btc: float | None
    token: str
    refresh_ms: int = 1000
    balance: BalanceCache = field(default_factory=lambda: BalanceCache(None))

    @property
    def rate(self) -> float | None:
        return (self.policy.usd_per_btc if self.policy else None) or self.usd_per_btc

    # -- sections ---------------------------------------------------------------------------------
    def summary_html(self) -> str:
        totals = self.ledger.totals()  # every payment ever, counted in SQL (running totals)
        counts = {s: totals[s] for s in ("settled", "pending", "failed")}
        waiting = len(self.queue.pending()) if self.queue else 0
        self.balance.refresh_soon()  # never waits: the read happens in its own thread
        value, label, note = self.balance.card(self.rate)
        cards = [("committed", "committed", fmt_msat(self.ledger.spent_msat(), self.rate))]
        cards += [(s, s, str(n)) for s, n in counts.items()]
        cards.append(("awaiting", "awaiting approval", str(waiting)))
        cards.append(("wallet", label, value))
        out = "<div class='cards'>" + "".join(
            f"<div class='card' id='card-{k}'><b>{_e(v)}</b><span>{_e(lbl)}</span></div>" for k, lbl, v in cards
        ) + "</div>"
        if note:
            cls = "none" if self.balance.wallet is None else "none bad"
            out += f"<p class='{cls}' id='wallet-note'>{_e(note, 400)}</p>"
        return out

    def approvals_html(self) -> str:
        if self.queue is None:
            return ("<p class='none'>No approval queue: the ledger is not a SQLite file; start the dashboard with "
                    "<code>--approvals PATH</code>.</p>")
        waiting, gone = self.queue.pending(), self.queue.unanswerable()
        out = ("".join(self._approval_card(a) for a in waiting) if waiting else
               "<p class='none' id='no-approvals'>Nothing is waiting for approval.</p>")
        if gone:  # shown, so a person sees the request is gone; no buttons: an answer would pay nothing
            out += ("<p class='none' id='gone-approvals'>No request waits for these any more; nothing will be paid "
                    "for them:</p>" + "".join(self._gone_card(a) for a in gone))
        return out

    def _gone_card(self, a: Approval) -> str:
        """An approval whose request expired or stopped: what it was for and why nobody waits."""
        return (
            f"<div class='approval gone' id='approval-{a.id}' data-id='{a.id}' data-state='{_e(a.state)}'>"
            f"<div class='what'><b>#{a.id} {_e(a.offer_title or a.offer_id or 'payment')}</b> for {_e(a.price)} "
            f"by {_e(a.method or '?')}: <b>{_e(a.state)}</b><div class='meta'>{_e(a.host)} · "
            f"<code>{_e(safe_url(a.url))}</code> · asked at {a.created_at:%H:%M:%S} UTC · {_e(a.why_gone())}; "
            "nobody waits for an answer</div></div></div>"
        )

    def _approval_card(self, a: Approval) -> str:
        form = (f"<form method='post' action='/approvals/{a.id}/{{verb}}'><input type='hidden' name='token' "
                f"value='{_e(self.token)}'><button type='submit' class='{{verb}}' id='{{verb}}-{a.id}'>{{label}}</button></form>")
        # The other offers the policy allows, each approvable instead; the request re-decides the pick with every limit.
        others = "".join(
            f"<form method='post' action='/approvals/{a.id}/approve'><input type='hidden' name='token' "
            f"value='{_e(self.token)}'><input type='hidden' name='offer_id' value='{_e(c.offer_id)}'>"
            f"<button type='submit' class='approve-other' id='approve-{a.id}-{i}'>Approve {_e(c.title)} "
            f"({_e(c.price)}) instead</button></form>"
            for i, c in enumerate(a.choices) if c.fits and c.offer_id != a.offer_id
        )
        return (
            f"<div class='approval' id='approval-{a.id}' data-id='{a.id}'><div class='what'>"
            f"<b>#{a.id} {_e(a.offer_title or a.offer_id or 'payment')}</b> for <b>{_e(a.price)}</b> "
            f"by {_e(a.method or '?')}<div class='meta'>{_e(a.host)} · <code>{_e(safe_url(a.url))}</code> · "
            f"asked at {a.created_at:%H:%M:%S} UTC"
            + (f" · answer by {a.deadline_at:%H:%M:%S} UTC" if a.deadline_at else "") + "</div></div><div>"
            + form.format(verb="approve", label="Approve") + " " + form.format(verb="deny", label="Deny")
            + (f"<div class='others'>{others}</div>" if others else "") + "</div></div>"
        )

    def budget_html(self) -> str:
        if self.policy is None:
            return "<p class='none'>No policy loaded: set <code>HTTPAY_POLICY</code> to a TOML file (or pass --policy) to see budgets.</p>"
        try:
            lines = budget_lines(self.policy, self.ledger, self.rate)
        except HttpayError as exc:
            return f"<p class='none'>{_e(exc)}</p>"
        return html_budget(lines, self.rate)

    def _total_budget(self, tag: tuple[str, str] | None) -> tuple[int | None, str]:
        """The all-time budget the chart compares with: the policy's, or the tag's own when filtered."""
        if self.policy is None:
            return None, "budget"
        try:
            limits = self.policy.tag_limit_list({tag[0]: tag[1]}, self.rate) if tag else self.policy.limits("", self.rate)
        except HttpayError:
            return None, "budget"
        found = next((lim.limit_msat for lim in limits if lim.name == "total budget" and lim.host is None), None)
        return found, (f"budget of {tag[0]}={tag[1]}" if tag else "total budget")

    def chart_html(self, where: Where = Where()) -> str:
        rows = self.ledger.receipts(limit=CHART_ROWS, tag=where.tag)
        budget, name = self._total_budget(where.tag)
        svg = spend_svg(rows, budget_msat=budget, usd_per_btc=self.rate, budget_name=name,
                        complete=len(rows) < CHART_ROWS)
        said = []
        if where.tag:
            said.append(f"payments tagged <b>{_e(where.tag[0])}={_e(where.tag[1])}</b>")
        if len(rows) >= CHART_ROWS:
            said.append(f"the newest {CHART_ROWS:,} payments (since {rows[-1].when} UTC)")
        return (f"<p class='none' id='chart-scope'>Showing {', '.join(said)}.</p>" if said else "") + svg

    def ledger_html(self, where: Where = Where()) -> str:
        """A page of the ledger, newest first; `before` pages back by id (read by the primary key)."""
        rows = self.ledger.receipts(limit=PAGE, before=where.before, tag=where.tag)
        title = "Recent payments" if where.before is None else f"Payments before #{where.before}"
        links = []
        if where.tag:
            links.append(f"<span id='tag-filter'>only <b>{_e(where.tag[0])}={_e(where.tag[1])}</b></span> "
                         f"<a id='clear-tag' href='{where.link(self.token, tag=None, before=None, rbefore=None)}'>show every tag</a>")
        if where.before is not None:
            links.append(f"<a id='newest' href='{where.link(self.token, before=None)}'>newest</a>")
        if len(rows) == PAGE and rows[-1].id > 1:
            links.append(f"<a id='older' href='{where.link(self.token, before=rows[-1].id)}'>older payments</a>")
        nav = f"<p class='pages'>{' · '.join(links)}</p>" if links else ""
        empty = "" if rows or not where.tag else f"<p class='none'>No payment carries {_e(where.tag[0])}={_e(where.tag[1])}.</p>"
        # the hash is for machines (the export has it); the page keeps its width for the URL and the tags
        return html_receipts(rows, title=title, usd_per_btc=self.rate, hide=("hash",)) + empty + nav

    def refusals_html(self, where: Where = Where()) -> str:
        """The newest refused attempts (nothing paid), paged by `rbefore` like the ledger, of the tag
        filtered by."""
        rows = self.ledger.refusals(limit=PAGE, before=where.rbefore, tag=where.tag)
        links = []
        if where.rbefore is not None:
            links.append(f"<a id='refusals-newest' href='{where.link(self.token, rbefore=None)}'>newest</a>")
        if len(rows) == PAGE and rows[-1].id > 1:
            links.append(f"<a id='refusals-older' href='{where.link(self.token, rbefore=rows[-1].id)}'>older refusals</a>")
        nav = f"<p class='pages'>{' · '.join(links)}</p>" if links else ""
        title = "Refused" if where.rbefore is None else f"Refused before #{where.rbefore}"
        said = f"<p class='none' id='refusals-scope'>Only those asked by {_e(where.tag[0])}={_e(where.tag[1])}.</p>" \
            if where.tag else ""
        return said + refusals_view(rows, title=title).to_html() + nav

    def tags_html(self, where: Where = Where()) -> str:
        """Payments and money committed per tag value (all time and the last 24 hours); each value
        filters the ledger and the chart."""
        spent = self.ledger.spent_by_tag()
        order: dict[str, int] = {}  # each key's values together, the key with the most spent first
        for k, _v, _n, m in spent:
            order[k] = order.get(k, 0) + m
        spent.sort(key=lambda t: (-order[t[0]], t[0], -t[3], t[1]))
        if not spent:
            return ("<p class='none' id='no-tags'>No payment carries tags yet: give each agent its own, "
                    "<code>Client(tags={\"agent\": \"research\"})</code> or <code>HTTPAY_TAGS=agent=research</code>.</p>")
        day = {(k, v): (n, m) for k, v, n, m in self.ledger.spent_by_tag(since=self.ledger.now() - timedelta(days=1))}
        head = ("<tr><th>tag</th><th style='text-align:right'>payments</th><th style='text-align:right'>committed</th>"
                "<th style='text-align:right'>last 24 h</th></tr>")
        body = []
        for k, v, n, m in spent[:TAG_ROWS]:
            on = where.tag == (k, v)
            link = where.link(self.token, tag=None if on else (k, v), before=None, rbefore=None)
            n_day, m_day = day.get((k, v), (0, 0))
            body.append(f"<tr class='tag-row{' on' if on else ''}'><td><a class='tag-filter' href='{link}' "
                        f"title='{'show every tag' if on else 'show only these payments'}'>{_e(k)}={_e(v)}</a></td>"
                        f"<td style='text-align:right'>{n:,}</td><td style='text-align:right'>{_e(fmt_msat(m, self.rate))}</td>"
                        f"<td style='text-align:right'>{_e(fmt_msat(m_day, self.rate)) if n_day else '—'}</td></tr>")
        more = (f"<p class='none'>{len(spent) - TAG_ROWS:,} more tag values spent less.</p>"
                if len(spent) > TAG_ROWS else "")
        return (f"<table id='tags-table'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>{more}"
                "<p class='none'>committed: settled and pending, fees included. Click a tag to filter the ledger "
                "and the chart.</p>")

    def sections(self, where: Where = Where()) -> dict[str, str]:
        return {"summary": self.summary_html(), "approvals": self.approvals_html(), "budget": self.budget_html(),
                "tags": self.tags_html(where), "chart": self.chart_html(where), "ledger": self.ledger_html(where),
                "refusals": self.refusals_html(where)}

    def page(self, nonce: str, flash: str | None = None, flash_bad: bool = False, where: Where = Where()) -> str:
        s = self.sections(where)
        place = safe_url(self.ledger.url) if "://" in self.ledger.url else self.ledger.url
        note = f"<div class='flash{' bad' if flash_bad else ''}' id='flash'>{_e(flash)}</div>" if flash else ""
        waiting = len(self.queue.pending()) if self.queue else 0
        title = (f"({waiting}) " if waiting else "") + "httpay dashboard"

        def sec(id_: str, heading: str, wide: bool = False) -> str:
            return (f"<section{' class=wide' if wide else ''} id='section-{id_}'><h2>{_e(heading)}</h2>"
                    f"<div id='{id_}' data-v='{_version(s[id_])}'>{s[id_]}</div></section>")

        return (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><meta name='referrer' content='no-referrer'>"
            f"<style nonce='{nonce}'>{CSS}</style></head><body>"
            f"<header><h1>httpay dashboard</h1><span class='muted'>ledger {_e(place)}</span>"
            f"<span class='muted'>local only · refreshes every {self.refresh_ms / 1000:g} s</span></header><main>"
            f"{note}{sec('summary', 'Overview', True)}{sec('approvals', 'Waiting for your approval', True)}"
            f"{sec('budget', 'Budgets', True)}{sec('tags', 'Spend by tag', True)}{sec('chart', 'Spend over time', True)}"
            f"{sec('ledger', 'Ledger', True)}{sec('refusals', 'Refused attempts (nothing paid)', True)}"
            f"</main><script nonce='{nonce}'>{SCRIPT % self.refresh_ms}</script></body></html>"
        )


def _version(html: str) -> str:
    """A short fingerprint of a section, so the page only redraws what changed."""
    return hashlib.sha256(html.encode()).hexdigest()[:12]


def _token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _headers(nonce: str | None = None) -> dict[str, str]:
    csp = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    if nonce:
        csp += f"; script-src 'nonce-{nonce}'"
    return {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY", "Content-Security-Policy": csp}


PAGE = 50  # ledger rows (and refusals) per page
CHART_ROWS = 2000  # payments the chart draws at most (the newest)
TAG_ROWS = 30  # tag values the "spend by tag" table lists (most spent first)


def _id(request: Request, name: str) -> int | None:
    """A page's `before` id asked for, if a sensible one (anything else: the newest page)."""
    raw = request.query_params.get(name, "")
    return digits(raw, 18)


def _where(request: Request) -> Where:
    """What the page shows, from its query: ?before=ID, ?rbefore=ID, ?tag=KEY=VALUE (a malformed one
    is ignored, as a mistyped page number is)."""
    key, eq, value = request.query_params.get("tag", "")[:300].partition("=")
    tag = (key.strip(), value.strip()) if eq and key.strip() and value.strip() else None
    return Where(before=_id(request, "before"), rbefore=_id(request, "rbefore"), tag=tag)


FORBIDDEN = "403 Forbidden: open the dashboard with the URL it printed (it carries ?token=...)\n"


OVER_A_LIMIT = "approved-over-a-limit"  # the answer to approving an offer marked "over a limit"


def create_app(ledger: str | os.PathLike[str] | Ledger | None = None, *, token: str | None = None,
               policy: Policy | None = None, usd_per_btc: float | None = None,
               approvals: str | os.PathLike[str] | None = None, refresh_ms: int = 1000,
               wallet: Wallet | None = None, wallet_note: str | None = None, balance_every_s: float = 5.0) -> Starlette:
    """The dashboard app for `ledger` (path, URL or Ledger). `app.state.token` holds the token.

    The approval queue lives in `approvals` (a SQLite file; default: the ledger's own file when
    it is SQLite). `wallet` (the caller keeps and closes it) shows its balance, read in the
    background at most every `balance_every_s` seconds; `wallet_note` says why there is none (a
    configuration error, shown instead of "no wallet configured").
    """
    token = token or secrets.token_urlsafe(24)
    lg = open_ledger(ledger)
    queue: ApprovalQueue | None
    try:
        queue = ApprovalQueue(approvals if approvals is not None else lg)
    except ConfigError:
        queue = None
    # no policy: the client's defaults are what limits spending, so they are what the page shows
    dash = Dashboard(ledger=lg, queue=queue, policy=policy if policy is not None else Policy(), usd_per_btc=usd_per_btc,
                     token=token, refresh_ms=refresh_ms,
                     balance=BalanceCache(wallet, every_s=balance_every_s, note=wallet_note))

    def _denied() -> Response:
        return PlainTextResponse(FORBIDDEN, status_code=403, headers=_headers())

    async def home(request: Request) -> Response:
        if not _token_ok(request.query_params.get("token"), token):
            return _denied()
        nonce = secrets.token_urlsafe(12)
        flash = request.query_params.get("done")
        text = {"approved": "Approved: the agent's request continues.", "denied": "Denied: nothing will be paid.",
                OVER_A_LIMIT: ("Approved, but that offer was over a limit of the policy when the payment was asked "
                               "for: the agent's request decides again with every limit and refuses it if it still "
                               "does not fit (nothing is paid then).")}.get(flash or "")
        err = request.query_params.get("error")
        body = await run_in_threadpool(dash.page, nonce, text or (err[:200] if err else None),
                                       bool(err) or flash == OVER_A_LIMIT, _where(request))
        return HTMLResponse(body, headers=_headers(nonce))

    async def state(request: Request) -> Response:
        if not _token_ok(request.query_params.get("token") or request.headers.get("x-httpay-token"), token):
            return JSONResponse({"error": "forbidden"}, status_code=403, headers=_headers())

        def read() -> dict[str, Any]:
            waiting = dash.queue.pending() if dash.queue else []
            gone = dash.queue.unanswerable() if dash.queue else []
            return {"waiting": len(waiting), "pending": [a.to_dict() | {"url": safe_url(a.url)} for a in waiting],
                    "unanswerable": [a.to_dict() | {"url": safe_url(a.url)} for a in gone],
                    "spent_msat": dash.ledger.spent_msat(),
                    "sections": {k: {"html": v, "v": _version(v)} for k, v in dash.sections(_where(request)).items()}}

        return JSONResponse(await run_in_threadpool(read), headers=_headers())

    async def decide(request: Request) -> Response:
        raw = (await request.body())[:10_000].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        if not _token_ok(form.get("token") or request.headers.get("x-httpay-token"), token):
            return _denied()
        verb = request.path_params["verb"]
        if verb not in ("approve", "deny"):
            return PlainTextResponse("404: the action is approve or deny\n", status_code=404, headers=_headers())
        try:
            approval_id = int(request.path_params["approval_id"])
        except ValueError:
            return PlainTextResponse("400: the approval id must be a number\n", status_code=400, headers=_headers())
        back = {"token": token}
        if dash.queue is None:
            back["error"] = "no approval queue is configured"
        else:
            try:
                offer_id = (form.get("offer_id") or "")[:200] or None
                answered = await run_in_threadpool(functools.partial(dash.queue.decide, approval_id,
                                                                     verb == "approve", "dashboard", offer_id=offer_id))
                back["done"] = "approved" if verb == "approve" else "denied"
                if verb == "approve" and (note := unfit_note(answered)) is not None:  # said, not "approved" alone
                    back["done"], back["note"] = OVER_A_LIMIT, f"Approved, but {note}."
            except ApprovalExpired as exc:  # nobody waits: said, with the state, so a page or script can tell
                back["error"], back["state"] = str(exc), exc.state
            except ApprovalError as exc:
                back["error"] = str(exc)
        if "application/json" in request.headers.get("accept", ""):
            answer = {k: v for k, v in back.items() if k != "token"}
            return JSONResponse(answer, status_code=409 if "error" in back else 200, headers=_headers())
        return RedirectResponse("/?" + urlencode({k: v for k, v in back.items() if k != "note"}), status_code=303,
                                headers=_headers())

    async def forbidden(request: Request) -> Response:
        return _denied()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dash.balance.refresh_soon()  # the first read starts with the server, not with the first page
        yield
        if queue is not None:
            queue.close()
        if not isinstance(ledger, Ledger):
            lg.close()

    app = Starlette(routes=[
        Route("/", home),
        Route("/api/state", state),
        Route("/approvals/{approval_id}/{verb:str}", decide, methods=["POST"]),
        Route("/{path:path}", forbidden, methods=["GET", "POST"]),
    ], lifespan=lifespan)
    app.state.token = token
    app.state.dashboard = dash
    return app


# -- serving ---------------------------------------------------------------------------------------------
def _bind(host: str, port: int) -> socket.socket:
    return listen(host, port, "the dashboard (it approves payments)")


@dataclass(frozen=True)
class RunningDashboard:
    url: str          # base URL, without the token
    token: str
    app: Starlette

    @property
    def page_url(self) -> str:
        return f"{self.url}/?token={self.token}"


def _server(app: Starlette) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))


@contextmanager
def serve_in_thread(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningDashboard]:
    """Serve the dashboard in a daemon thread until the block ends (tests, notebooks)."""
    sock = _bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="httpay-dashboard", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.01)
        yield RunningDashboard(url_of(sock, host), app.state.token, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def run(app: Starlette, host: str = "127.0.0.1", port: int = 8403,
        on_ready: Callable[[RunningDashboard], None] | None = None) -> None:
    """Serve in the foreground until interrupted; `on_ready` gets the URL (with the real port) first."""
    sock = _bind(host, port)
    if on_ready is not None:
        on_ready(RunningDashboard(url_of(sock, host), app.state.token, app))
    try:
        _server(app).run(sockets=[sock])
    finally:
        sock.close()

