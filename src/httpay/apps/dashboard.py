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
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

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

from httpay.amounts import fmt_msat
from httpay.apps.approvals import Approval, ApprovalQueue
from httpay.apps.display import STATUS_COLOUR, budget_lines, html_budget, html_receipts
from httpay.errors import ApprovalError, ConfigError, HttpayError
from httpay.ledger import Ledger, Receipt, open_ledger
from httpay.loopback import require_loopback
from httpay.policy import Policy
from httpay.view import escape as _e

SECRET_WORDS = ("token", "key", "secret", "pass", "auth", "sig", "session", "bearer", "macaroon", "preimage")


def safe_url(url: str) -> str:
    """The URL with user info dropped and credential-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = [(k, "***" if any(w in k.lower() for w in SECRET_WORDS) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


def spend_svg(receipts: list[Receipt], *, width: int = 1000, height: int = 190, budget_msat: int | None = None,
              usd_per_btc: float | None = None, now: datetime | None = None) -> str:
    """Cumulative money committed (settled + pending) over time, as an inline SVG step line."""
    rs = sorted((r for r in receipts if r.status.value != "failed"), key=lambda r: r.created_at)
    if not rs:
        return "<p class='none'>no payments yet</p>"
    now = now or datetime.now(UTC)
    left, right, top, bottom = 90, 12, 14, 26
    t1 = max(now.timestamp(), rs[-1].created_at.timestamp())
    t0 = min(rs[0].created_at.timestamp(), t1 - 3600)  # at least the last hour, so the steps read as steps
    span = max(t1 - t0, 1.0) * 1.02
    total = sum(r.total_msat for r in rs)
    ymax = max(total, 1) * 1.15
    if budget_msat and budget_msat <= ymax * 1.5:
        ymax = max(ymax, budget_msat * 1.05)
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
                    f"<title>#{r.id} {_e(r.status.value)} {_e(fmt_msat(r.total_msat, usd_per_btc))} at {_e(r.when)} UTC</title></circle>")
    points.append((x(t1), y(acc)))
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
    parts = [
        (f"<svg class='httpay-chart' role='img' aria-label='spend over time' "
        f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg' font-size='11' fill='#57606a'>"),
        f"<line x1='{left}' y1='{top + h}' x2='{left + w}' y2='{top + h}' stroke='#d0d7de'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + h}' stroke='#d0d7de'/>",
        f"<text x='{left - 6}' y='{y(acc) + 4:.1f}' text-anchor='end'>{_e(fmt_msat(acc))}</text>",
        f"<text x='{left - 6}' y='{top + h + 4}' text-anchor='end'>0</text>",
        f"<text x='{left}' y='{height - 6}'>{datetime.fromtimestamp(t0, UTC):%m-%d %H:%M} UTC</text>",
        f"<text x='{left + w}' y='{height - 6}' text-anchor='end'>now ({datetime.fromtimestamp(t1, UTC):%H:%M} UTC)</text>",
    ]
    if budget_msat and budget_msat <= ymax:
        parts.append(f"<line x1='{left}' y1='{y(budget_msat):.1f}' x2='{left + w}' y2='{y(budget_msat):.1f}' "
                     f"stroke='#cf222e' stroke-dasharray='5 4'/><text x='{left + w}' y='{y(budget_msat) - 4:.1f}' "
                     f"text-anchor='end' fill='#cf222e'>budget {_e(fmt_msat(budget_msat))}</text>")
    parts.append(f"<polyline points='{line}' fill='none' stroke='#0969da' stroke-width='2'/>")
    parts.extend(dots)
    parts.append("</svg>")
    return "".join(parts)


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
.approval form{display:inline} button{font:inherit;font-weight:600;border-radius:6px;padding:6px 16px;cursor:pointer;border:1px solid}
button.approve{background:#1f883d;color:#fff;border-color:#1a7f37} button.approve-other{color:#1a7f37;border-color:#1a7f37} .others{margin-top:.4em} button.deny{background:#fff;color:#cf222e;border-color:#cf222e}
.none{color:#57606a} .httpay-meter{display:inline-block;width:90px;height:8px;background:#eaeef2;border-radius:4px;vertical-align:middle}
.httpay-meter div{height:8px;border-radius:4px} .flash{grid-column:1/-1;padding:8px 12px;border-radius:6px;background:#dafbe1}
.flash.bad{background:#ffebe9} svg.httpay-chart{width:100%;height:auto;max-height:220px;display:block}
@media (max-width:900px){main{grid-template-columns:1fr}}
"""

SCRIPT = """
(function(){
  const query = new URLSearchParams(location.search);
  const token = query.get('token') || '';
  const before = query.get('before');
  async function refresh(){
    try {
      const r = await fetch('/api/state?token=' + encodeURIComponent(token)
                            + (before ? '&before=' + encodeURIComponent(before) : ''), {cache:'no-store'});
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


@dataclass
class Dashboard:
    """What the page reads: the ledger, the approval queue (None when unavailable), the policy."""

    ledger: Ledger
    queue: ApprovalQueue | None
    policy: Policy | None
    usd_per_btc: float | None
    token: str
    refresh_ms: int = 1000

    @property
    def rate(self) -> float | None:
        return (self.policy.usd_per_btc if self.policy else None) or self.usd_per_btc

    # -- sections ---------------------------------------------------------------------------------
    def summary_html(self) -> str:
        totals = self.ledger.totals()  # every payment ever, counted in SQL (running totals)
        counts = {s: totals[s] for s in ("settled", "pending", "failed")}
        waiting = len(self.queue.pending()) if self.queue else 0
        cards = [("committed", fmt_msat(self.ledger.spent_msat(), self.rate))]
        cards += [(s, str(n)) for s, n in counts.items()]
        cards.append(("awaiting approval", str(waiting)))
        return "<div class='cards'>" + "".join(
            f"<div class='card' id='card-{_e(k.split()[0])}'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v in cards
        ) + "</div>"

    def approvals_html(self) -> str:
        if self.queue is None:
            return ("<p class='none'>No approval queue: the ledger is not a SQLite file; start the dashboard with "
                    "<code>--approvals PATH</code>.</p>")
        waiting = self.queue.pending()
        if not waiting:
            return "<p class='none' id='no-approvals'>Nothing is waiting for approval.</p>"
        return "".join(self._approval_card(a) for a in waiting)

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
            f"asked at {a.created_at:%H:%M:%S} UTC</div></div><div>"
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

    def chart_html(self) -> str:
        budget = None
        if self.policy is not None:
            try:
                budget = next((lim.limit_msat for lim in self.policy.limits("", self.rate) if lim.name == "total budget"), None)
            except HttpayError:
                budget = None
        return spend_svg(self.ledger.receipts(limit=2000), budget_msat=budget, usd_per_btc=self.rate)

    def ledger_html(self, before: int | None = None) -> str:
        """A page of the ledger, newest first; `before` pages back by id (read by the primary key)."""
        rows = self.ledger.receipts(limit=PAGE, before=before)
        title = "Recent payments" if before is None else f"Payments before #{before}"
        links = []
        if before is not None:
            links.append(f"<a id='newest' href='/?token={_e(self.token)}'>newest</a>")
        if len(rows) == PAGE and rows[-1].id > 1:
            links.append(f"<a id='older' href='/?token={_e(self.token)}&amp;before={rows[-1].id}'>older payments</a>")
        nav = f"<p class='pages'>{' · '.join(links)}</p>" if links else ""
        return html_receipts(rows, title=title, usd_per_btc=self.rate) + nav

    def sections(self, before: int | None = None) -> dict[str, str]:
        return {"summary": self.summary_html(), "approvals": self.approvals_html(), "budget": self.budget_html(),
                "chart": self.chart_html(), "ledger": self.ledger_html(before)}

    def page(self, nonce: str, flash: str | None = None, flash_bad: bool = False, before: int | None = None) -> str:
        s = self.sections(before)
        where = safe_url(self.ledger.url) if "://" in self.ledger.url else self.ledger.url
        note = f"<div class='flash{' bad' if flash_bad else ''}' id='flash'>{_e(flash)}</div>" if flash else ""
        waiting = len(self.queue.pending()) if self.queue else 0
        title = (f"({waiting}) " if waiting else "") + "httpay dashboard"

        def sec(id_: str, heading: str, wide: bool = False) -> str:
            return (f"<section{' class=wide' if wide else ''}><h2>{_e(heading)}</h2>"
                    f"<div id='{id_}' data-v='{_version(s[id_])}'>{s[id_]}</div></section>")

        return (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><meta name='referrer' content='no-referrer'>"
            f"<style nonce='{nonce}'>{CSS}</style></head><body>"
            f"<header><h1>httpay dashboard</h1><span class='muted'>ledger {_e(where)}</span>"
            f"<span class='muted'>local only · refreshes every {self.refresh_ms / 1000:g} s</span></header><main>"
            f"{note}{sec('summary', 'Overview', True)}{sec('approvals', 'Waiting for your approval', True)}"
            f"{sec('budget', 'Budgets', True)}{sec('chart', 'Spend over time', True)}{sec('ledger', 'Ledger', True)}"
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


PAGE = 50  # ledger rows per page


def _before(request: Request) -> int | None:
    """The `before` id of a ledger page asked for, if a sensible one (anything else: the newest page)."""
    raw = request.query_params.get("before", "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 18 else None


FORBIDDEN = "403 Forbidden: open the dashboard with the URL it printed (it carries ?token=...)\n"


def create_app(ledger: str | os.PathLike[str] | Ledger | None = None, *, token: str | None = None,
               policy: Policy | None = None, usd_per_btc: float | None = None,
               approvals: str | os.PathLike[str] | None = None, refresh_ms: int = 1000) -> Starlette:
    """The dashboard app for `ledger` (path, URL or Ledger). `app.state.token` holds the token.

    The approval queue lives in `approvals` (a SQLite file; default: the ledger's own file when
    it is SQLite).
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
                     token=token, refresh_ms=refresh_ms)

    def _denied() -> Response:
        return PlainTextResponse(FORBIDDEN, status_code=403, headers=_headers())

    async def home(request: Request) -> Response:
        if not _token_ok(request.query_params.get("token"), token):
            return _denied()
        nonce = secrets.token_urlsafe(12)
        flash = request.query_params.get("done")
        text = {"approved": "Approved: the agent's request continues.", "denied": "Denied: nothing will be paid."}.get(flash or "")
        err = request.query_params.get("error")
        body = await run_in_threadpool(dash.page, nonce, text or (err[:200] if err else None), bool(err),
                                       _before(request))
        return HTMLResponse(body, headers=_headers(nonce))

    async def state(request: Request) -> Response:
        if not _token_ok(request.query_params.get("token") or request.headers.get("x-httpay-token"), token):
            return JSONResponse({"error": "forbidden"}, status_code=403, headers=_headers())

        def read() -> dict[str, Any]:
            waiting = dash.queue.pending() if dash.queue else []
            return {"waiting": len(waiting), "pending": [a.to_dict() | {"url": safe_url(a.url)} for a in waiting],
                    "spent_msat": dash.ledger.spent_msat(),
                    "sections": {k: {"html": v, "v": _version(v)} for k, v in dash.sections(_before(request)).items()}}

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
                await run_in_threadpool(functools.partial(dash.queue.decide, approval_id, verb == "approve",
                                                          "dashboard", offer_id=offer_id))
                back["done"] = "approved" if verb == "approve" else "denied"
            except ApprovalError as exc:
                back["error"] = str(exc)
        if "application/json" in request.headers.get("accept", ""):
            answer = {k: v for k, v in back.items() if k != "token"}
            return JSONResponse(answer, status_code=409 if "error" in back else 200, headers=_headers())
        return RedirectResponse("/?" + urlencode(back), status_code=303, headers=_headers())

    async def forbidden(request: Request) -> Response:
        return _denied()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
def _loopback(host: str) -> None:
    require_loopback(host, "the dashboard (it approves payments)")


def _bind(host: str, port: int) -> socket.socket:
    _loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror}; try --port 0 for a free port") from None
    sock.listen(64)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


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
        yield RunningDashboard(_url(sock, host), app.state.token, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def run(app: Starlette, host: str = "127.0.0.1", port: int = 8403,
        on_ready: Callable[[RunningDashboard], None] | None = None) -> None:
    """Serve in the foreground until interrupted; `on_ready` gets the URL (with the real port) first."""
    sock = _bind(host, port)
    if on_ready is not None:
        on_ready(RunningDashboard(_url(sock, host), app.state.token, app))
    try:
        _server(app).run(sockets=[sock])
    finally:
        sock.close()

