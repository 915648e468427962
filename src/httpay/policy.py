"""The rules a person sets: how much may be paid, for what, and how an offer is chosen.

A `Policy` holds the settings and turns them into limits (`limits`, `per_payment_cap`) and host
checks; `httpay.core.quote.quote` applies them to a challenge, and the ledger enforces the
budgets inside its own transaction, so two agents racing cannot both squeeze under a limit.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal

from httpay.amounts import (
    MAX_MSAT,
    MSAT_PER_BTC,
    as_decimal,
    fmt_msat,
    rate_ok,
    usd_value,
)
from httpay.errors import ConfigError, PaymentRefused
from httpay.hosts import host_name, host_parts

Strategy = Literal["cheapest", "cheapest_per_credit", "covers_calls", "largest"]
Approval = Any  # an approver's answer: True, False/None, or the offer (or its id) a person picked instead; it may
# also raise PaymentRefused to say why not (ApprovalQueue does when nobody answered in time)
Approver = Callable[[Any], Approval | Awaitable[Approval]]  # called with the `httpay.Quote` to approve
# Set by a caller whose request may be cancelled from elsewhere while its thread waits for an
# approver (an MCP tool call its host cancelled): True once it was. A wait ends as a denial then,
# and an approver's yes that comes after it pays nothing.
CANCELLED: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("httpay_approval_cancelled",
                                                                                      default=None)
TAG_TEXT = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")  # a tag's key or value: a short word, grouped and exported as is
PAYABLE_METHODS = ("lightning", "x402", "mpp")  # what a Policy(methods=...) entry starts with (before any ":")
PUBKEY = re.compile(r"0[23][0-9a-fA-F]{64}")  # a Lightning node's compressed public key
MAX_POLICY_NUMBER = 10**15  # no limit, rate or fee a person sets is larger (10^15 sat is more than all bitcoin)


def usd_to_msat(usd: float, usd_per_btc: float) -> int:
    """Exact decimal conversion (no float drift at limits), rounded down: a limit never grows.

    A limit above all the bitcoin there is means "no limit in practice" and is held at MAX_MSAT,
    so no later arithmetic meets a number of thousands of digits."""
    if not (math.isfinite(usd) and usd >= 0) or not rate_ok(usd_per_btc):
        raise ConfigError(f"cannot convert {usd!r} USD at {usd_per_btc!r} USD/BTC: both must be finite, positive numbers")
    return min(math.floor(as_decimal(usd) * MSAT_PER_BTC / as_decimal(usd_per_btc)), MAX_MSAT)


def msat_to_usd(msat: int, usd_per_btc: float | None) -> float | None:
    """USD worth of `msat`; None when the rate is unknown or unusable (never inf)."""
    if not rate_ok(usd_per_btc) or abs(msat) > MAX_MSAT:
        return None
    return float(usd_value(msat, usd_per_btc))


# The limits a policy has when a person set nothing for that dimension (Policy.unlimited() has none).
# In sat, so they need no exchange rate; the same as l402-requests (lnget caps 1,000 sat per request).
DEFAULT_MAX_PER_PAYMENT_SAT = 1_000
DEFAULT_PER_HOUR_SAT = 10_000
DEFAULT_PER_DAY_SAT = 50_000

_NUMBER_FIELDS = ("max_per_payment_usd", "budget_usd", "max_per_payment_sat", "budget_sat", "per_host_usd",
                  "per_hour_usd", "per_day_usd", "per_hour_sat", "per_day_sat", "usd_per_btc", "max_fee_msat")


@dataclass(frozen=True)
class Limit:
    """One spending limit the ledger enforces in its transaction: total, per host, per window.

    `knob` is the Policy field that sets it (what a refusal tells a person to raise); `default`
    marks a limit the person did not set (httpay's default)."""

    name: str
    limit_msat: int
    host: str | None = None
    window: timedelta | None = None
    knob: str | None = None
    default: bool = False
    tag: tuple[str, str] | None = None  # only the payments carrying this tag ("agent", "research") count

    def describe(self, usd_per_btc: float | None) -> str:
        scope = f" for {self.host}" if self.host else (f" for {self.tag[0]}={self.tag[1]}" if self.tag else "")
        return f"{'default ' if self.default else ''}{self.name}{scope} of {fmt_msat(self.limit_msat, usd_per_btc)}"


@dataclass
class Policy:
    """Limits and choices for paying. Amounts in USD (converted at `usd_per_btc`) or in sat.

    Safe by default: a dimension the person set nothing for keeps httpay's default limit, at most
    1,000 sat per payment, 10,000 sat per hour and 50,000 sat per day (`Policy()` has all three;
    `Policy(budget_usd=5)` still caps each payment at 1,000 sat; `Policy(max_per_payment_usd=2)`
    replaces the per-payment default). `Policy.unlimited(...)` is the one way to drop the defaults:
    it has only the limits given to it, and none at all when given none.

    With no rate set here, the wallet's rate is used if it has one; a USD limit with no rate at
    all refuses to pay rather than guess.
    """

    max_per_payment_usd: float | None = None
    budget_usd: float | None = None
    max_per_payment_sat: int | None = None
    budget_sat: int | None = None
    per_host_usd: float | None = None
    per_hour_usd: float | None = None
    per_day_usd: float | None = None
    per_hour_sat: int | None = None
    per_day_sat: int | None = None
    methods: Sequence[str] = ("lightning",)
    strategy: Strategy = "cheapest"
    prefer: Sequence[str] = ()  # dialects or methods to choose first, in order, when a 402 offers several
    # budgets of one tag inside a shared ledger: {"agent=research": {"per_day_usd": 2, "budget_usd": 20}}
    tag_limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    calls: int | None = None
    approve: Approver | None = None
    usd_per_btc: float | None = None
    rate_source: Callable[[], float] | None = None  # asked for BTC/USD when usd_per_btc is not fixed
    price_tolerance: float = 0.05
    allowed_hosts: Sequence[str] | None = None
    denied_hosts: Sequence[str] = ()
    payment_hosts: Sequence[str] = ()
    payees: Mapping[str, str] = field(default_factory=dict)  # host -> the node pubkey its invoices must pay
    max_fee_msat: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    default_limits: bool = True  # False only through Policy.unlimited(): no default limit is added
    sign_in: bool = False        # sign in (x402 sign-in-with-x, EIP-191) where a service offers it, before paying
    proposals: Sequence[str] = ()  # unmerged protocol proposals whose offers may be paid (e.g. "x402-lnbtc")

    @classmethod
    def unlimited(cls, **settings: Any) -> Policy:
        """A policy without httpay's default limits: only the limits in `settings`, none if none are given.

        The one explicit way to let spending run up to the wallet's balance; shown as "unlimited"
        by `httpay budget`, the budget tool and `str(policy)`."""
        return cls(default_limits=False, **settings)

    def __setattr__(self, name: str, value: Any) -> None:
        """A setting changed after the policy was made is checked as if it had been given (a NaN cap
        would otherwise surface as a bare ValueError mid-payment); a bad one leaves the old in place."""
        state = self.__dict__
        if not state.get("_ready") or state.get("_checking") or name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        names = [f.name for f in fields(self)]
        if name not in names:  # a misspelt setting would be kept and never read: said, as when it is given
            raise _no_such_setting([name], names)
        missing = object()
        old = state.get(name, missing)
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_checking", True)
        try:
            self.__post_init__()
        except ConfigError:
            if old is missing:
                object.__delattr__(self, name)
            else:
                object.__setattr__(self, name, old)
            raise
        finally:
            object.__setattr__(self, "_checking", False)

    def __post_init__(self) -> None:
        for name in _NUMBER_FIELDS:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                                  or (isinstance(v, float) and not math.isfinite(v)) or v < 0):
                raise ConfigError(f"Policy({name}=...) must be a non-negative finite number, got {v!r}")
            if v is not None and v > MAX_POLICY_NUMBER:
                raise ConfigError(f"Policy({name}=...) is larger than any real amount (at most {MAX_POLICY_NUMBER:.0e})")
        if not isinstance(self.sign_in, bool):
            raise ConfigError(f"Policy(sign_in=...) must be True or False (sign in where a service offers it), "
                              f"got {self.sign_in!r}")
        if not isinstance(self.default_limits, bool):
            raise ConfigError(f"Policy(default_limits=...) must be True or False, got {self.default_limits!r}")
        for name in ("allowed_hosts", "denied_hosts", "payment_hosts"):
            v = getattr(self, name)
            if isinstance(v, str):  # one host, not a list of its letters
                setattr(self, name, (v,))
            elif v is not None and (not isinstance(v, Sequence | set | frozenset) or not all(isinstance(h, str) for h in v)):
                raise ConfigError(f"Policy({name}=...) must be a list of host names, got {v!r:.60}")
            for h in getattr(self, name) or ():
                if (problem := _host_pattern_problem(h)) is not None:
                    raise ConfigError(f"Policy({name}=...): {problem}")
        if self.approve is not None and not callable(self.approve):
            raise ConfigError(f"Policy(approve=...) must be a function (or an httpay ApprovalQueue) asked about each "
                              f"payment, got {type(self.approve).__name__}")
        if self.calls is not None and (isinstance(self.calls, bool) or not isinstance(self.calls, int) or self.calls < 1):
            raise ConfigError(f"Policy(calls=...) must be a whole number of at least 1, got {self.calls!r}")
        if isinstance(self.price_tolerance, bool) or not isinstance(self.price_tolerance, int | float):
            raise ConfigError(f"Policy(price_tolerance=...) must be a number between 0 and 1, got {self.price_tolerance!r}")
        if self.rate_source is not None and not callable(self.rate_source):
            raise ConfigError("Policy(rate_source=...) must be a function returning the BTC price in USD")
        if self.usd_per_btc == 0:
            raise ConfigError("Policy(usd_per_btc=...) must be positive")
        if not 0 <= self.price_tolerance <= 1:
            raise ConfigError(f"Policy(price_tolerance=...) must be between 0 and 1, got {self.price_tolerance!r}")
        if self.strategy not in ("cheapest", "cheapest_per_credit", "covers_calls", "largest"):
            raise ConfigError(
                "Policy(strategy=...) must be 'cheapest', 'cheapest_per_credit', 'covers_calls' or 'largest', "
                f"got {self.strategy!r}"
            )
        if self.strategy == "covers_calls" and (not isinstance(self.calls, int) or self.calls < 1):
            raise ConfigError("Policy(strategy='covers_calls') needs calls=N: how many calls the purchase should cover")
        if isinstance(self.methods, str):
            self.methods = (self.methods,)
        self._check_methods()
        self._check_payees()
        if isinstance(self.proposals, str):
            self.proposals = (self.proposals,)
        if not all(isinstance(p, str) for p in self.proposals):
            raise ConfigError(f"Policy(proposals=...) must be a list of proposal names such as 'x402-lnbtc', "
                              f"got {self.proposals!r}")
        self._check_tag_limits()
        if isinstance(self.prefer, str):
            self.prefer = (self.prefer,)
        if not all(isinstance(p, str) and p for p in self.prefer):
            raise ConfigError(f"Policy(prefer=...) must be a list of dialect or method names (e.g. ['l402-classic', "
                              f"'mpp', 'lightning']), got {self.prefer!r}")

    def _check_methods(self) -> None:
        """Each method one httpay pays by (a typo would refuse every offer, or allow none it meant)."""
        if not all(isinstance(m, str) for m in self.methods):
            raise ConfigError(f"Policy(methods=...) must be a list of method names such as 'lightning' or 'x402', "
                              f"got {self.methods!r}")
        for m in self.methods:
            if m.split(":", 1)[0] not in PAYABLE_METHODS or m.endswith(":"):
                raise ConfigError(
                    f"Policy(methods=...) names {m!r}, which httpay cannot pay by: use 'lightning', 'x402' (or "
                    "'x402:exact', 'x402:exact:base'), 'mpp' (or 'mpp:evm:charge'); a service's other methods "
                    "(credit_card, coinbase_commerce) are shown in its offers but are not paid by httpay")

    def _check_payees(self) -> None:
        if not isinstance(self.payees, Mapping):
            raise ConfigError(f"Policy(payees=...) must be a mapping of host to node pubkey, got {self.payees!r:.60}")
        for host, pubkey in self.payees.items():
            if not isinstance(host, str) or not host:
                raise ConfigError(f"Policy(payees=...) keys must be host names, got {host!r:.60}")
            if not isinstance(pubkey, str) or not PUBKEY.fullmatch(pubkey):
                raise ConfigError(f"Policy(payees=...): {host}'s payee must be a node pubkey (66 hex digits, starting "
                                  f"02 or 03), got {pubkey!r:.80}")
        self.payees = {host: pubkey.lower() for host, pubkey in self.payees.items()}

    # -- what the limits are ---------------------------------------------------------------------
    def _default(self, *fields: str) -> bool:
        """True when httpay's default applies: defaults are on and the person set none of `fields`."""
        return self.default_limits and all(getattr(self, f) is None for f in fields)

    def effective(self) -> dict[str, tuple[float | int, bool]]:
        """Every limit in force, by Policy field: (value, is_default). Empty means unlimited."""
        defaults = {"max_per_payment_sat": (("max_per_payment_usd", "max_per_payment_sat"), DEFAULT_MAX_PER_PAYMENT_SAT),
                    "per_hour_sat": (("per_hour_usd", "per_hour_sat"), DEFAULT_PER_HOUR_SAT),
                    "per_day_sat": (("per_day_usd", "per_day_sat"), DEFAULT_PER_DAY_SAT)}
        out: dict[str, tuple[float | int, bool]] = {}
        for name in ("max_per_payment_usd", "max_per_payment_sat", "budget_usd", "budget_sat", "per_host_usd",
                     "per_hour_usd", "per_hour_sat", "per_day_usd", "per_day_sat"):
            v = getattr(self, name)
            if v is not None:
                out[name] = (v, False)
            elif name in defaults and self._default(*defaults[name][0]):
                out[name] = (defaults[name][1], True)
        return out

    @property
    def has_total_budget(self) -> bool:
        """A limit on everything spent, whenever (only then is the whole history summed)."""
        return self.budget_usd is not None or self.budget_sat is not None

    @property
    def is_unlimited(self) -> bool:
        """No limit on spending at all (only Policy.unlimited() with no limits is)."""
        return not self.effective() and self.approve is None

    def describe_limits(self) -> list[str]:
        """The limits in words, for people and LLMs ("1,000 sat per payment (default)"), or "unlimited"."""
        words = {"max_per_payment": "per payment", "budget": "in total", "per_host": "per host",
                 "per_hour": "per hour", "per_day": "per day"}
        out = []
        for name, (v, default) in self.effective().items():
            base, unit = name.rsplit("_", 1)
            amount = f"${v:,.2f}" if unit == "usd" else f"{v:,} sat"
            out.append(f"{'at most ' if base == 'max_per_payment' else ''}{amount} {words[base]}"
                       + (" (default)" if default else ""))
        if not out:
            return ["unlimited (Policy.unlimited(): only the wallet's balance limits spending)"]
        return out

    def __str__(self) -> str:
        approve = "; a person approves each payment" if self.approve is not None else ""
        return "Policy: " + ", ".join(self.describe_limits()) + approve

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.repr and f.name not in ("approve", "rate_source") and getattr(self, f.name) != f.default
                 and not (f.default_factory is not MISSING and getattr(self, f.name) == f.default_factory())]
        if self.approve is not None:
            shown.append(f"approve=<{getattr(self.approve, '__name__', type(self.approve).__name__)}>")
        if self.rate_source is not None:
            shown.append("rate_source=<function>")
        return f"Policy({', '.join(shown)}) [{', '.join(self.describe_limits())}]"

    # -- amounts -------------------------------------------------------------------------------
    def _usd_limit_msat(self, usd: float | None, rate: float | None, rule: str, offers: Any,
                        knob: str | None = None) -> int | None:
        if usd is None:
            return None
        if not rate:
            raise PaymentRefused(
                f"refused: the {rule}{f' ({knob})' if knob else ''} is set in USD but no BTC/USD rate is known",
                rule="exchange_rate", offers=offers, knob="usd_per_btc",
                advice="set {knob} or use a wallet that reports a rate",
            )
        return usd_to_msat(usd, rate)

    def per_payment_cap(self, rate: float | None, offers: Any = None) -> tuple[int, str, bool] | None:
        """The per-payment cap: (msat, the Policy field that sets it, is it httpay's default), or None."""
        caps: list[tuple[int, str, bool]] = []
        usd = self._usd_limit_msat(self.max_per_payment_usd, rate, "per-payment limit", offers, "max_per_payment_usd")
        if usd is not None:
            caps.append((usd, "max_per_payment_usd", False))
        if self.max_per_payment_sat is not None:
            caps.append((int(self.max_per_payment_sat * 1000), "max_per_payment_sat", False))
        if self._default("max_per_payment_usd", "max_per_payment_sat"):
            caps.append((DEFAULT_MAX_PER_PAYMENT_SAT * 1000, "max_per_payment_sat", True))
        return min(caps, key=lambda c: c[0]) if caps else None

    def max_per_payment_msat(self, rate: float | None, offers: Any = None) -> int | None:
        cap = self.per_payment_cap(rate, offers)
        return cap[0] if cap else None

    TAG_LIMIT_KEYS = ("budget_usd", "budget_sat", "per_day_usd", "per_day_sat", "per_hour_usd", "per_hour_sat")

    def _check_tag_limits(self) -> None:
        if not isinstance(self.tag_limits, Mapping):
            raise ConfigError("Policy(tag_limits=...) must map 'key=value' tags to their limits, e.g. "
                              "{'agent=research': {'per_day_usd': 2}}")
        for tag, limits in self.tag_limits.items():
            key, sep, value = str(tag).partition("=")
            if not isinstance(tag, str) or not sep or not TAG_TEXT.fullmatch(key) or not TAG_TEXT.fullmatch(value):
                raise ConfigError(f"Policy(tag_limits=...): {tag!r} must be a tag written key=value with no spaces, "
                                  "as tags are (letters, digits and _.:/@+-), e.g. 'agent=research'; else it never applies")
            if not isinstance(limits, Mapping) or not limits:
                raise ConfigError(f"Policy(tag_limits=...)[{tag!r}] must give at least one of "
                                  f"{', '.join(self.TAG_LIMIT_KEYS)}")
            for name, v in limits.items():
                if name not in self.TAG_LIMIT_KEYS:
                    raise ConfigError(f"Policy(tag_limits=...)[{tag!r}]: {name!r} is not a tag limit; use one of "
                                      f"{', '.join(self.TAG_LIMIT_KEYS)}")
                if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)) \
                        or v < 0 or v > MAX_POLICY_NUMBER:
                    raise ConfigError(f"Policy(tag_limits=...)[{tag!r}][{name!r}] must be a non-negative finite number, "
                                      f"got {v!r}")

    def tag_limit_list(self, tags: Mapping[str, str], rate: float | None, offers: Any = None) -> list[Limit]:
        """The limits of every tag this payment carries."""
        out: list[Limit] = []
        for spec, limits in self.tag_limits.items():
            key, _, value = spec.partition("=")
            if tags.get(key) != value:
                continue
            for name, amount in limits.items():
                window = {"per_day": timedelta(days=1), "per_hour": timedelta(hours=1)}.get(name.rsplit("_", 1)[0])
                label = {"per_day": "daily budget", "per_hour": "hourly budget"}.get(name.rsplit("_", 1)[0], "total budget")
                knob = f"tag_limits[{spec!r}][{name!r}]"
                msat = (self._usd_limit_msat(float(amount), rate, f"{label} of {spec}", offers, knob) or 0
                        if name.endswith("_usd") else int(amount * 1000))
                out.append(Limit(label, msat, window=window, knob=knob, tag=(key, value)))
        return out

    def limits(self, host: str, rate: float | None, offers: Any = None,
               tags: Mapping[str, str] | None = None) -> list[Limit]:
        """The budgets the ledger must enforce for a payment to `host` carrying `tags`."""
        out: list[Limit] = self.tag_limit_list(tags, rate, offers) if tags and self.tag_limits else []
        total: list[tuple[int, str]] = []
        usd = self._usd_limit_msat(self.budget_usd, rate, "total budget", offers, "budget_usd")
        if usd is not None:
            total.append((usd, "budget_usd"))
        if self.budget_sat is not None:
            total.append((int(self.budget_sat * 1000), "budget_sat"))
        if total:
            msat, knob = min(total)
            out.append(Limit("total budget", msat, knob=knob))
        if self.per_host_usd is not None:  # one budget for the host however a URL spells it, on every port
            out.append(Limit("per-host budget", self._usd_limit_msat(self.per_host_usd, rate, "per-host budget", offers,
                                                                     "per_host_usd") or 0, host=host_name(host),
                             knob="per_host_usd"))
        for name, window, usd_field, sat_field, default in (
            ("hourly budget", timedelta(hours=1), "per_hour_usd", "per_hour_sat", DEFAULT_PER_HOUR_SAT),
            ("daily budget", timedelta(days=1), "per_day_usd", "per_day_sat", DEFAULT_PER_DAY_SAT),
        ):
            usd_value, sat_value = getattr(self, usd_field), getattr(self, sat_field)
            if usd_value is not None:
                out.append(Limit(name, self._usd_limit_msat(usd_value, rate, name, offers, usd_field) or 0,
                                 window=window, knob=usd_field))
            if sat_value is not None:
                out.append(Limit(name, int(sat_value * 1000), window=window, knob=sat_field))
            if self._default(usd_field, sat_field):
                out.append(Limit(name, default * 1000, window=window, knob=sat_field, default=True))
        return out

    # -- hosts -----------------------------------------------------------------------------------
    def check_host(self, host: str, offers: Any = None) -> None:
        h = host.lower()
        if any(_host_matches(h, d) for d in self.denied_hosts):
            raise PaymentRefused(f"refused: {host} is on the policy's denied hosts", rule="denied_host", offers=offers)
        if self.allowed_hosts is not None and not any(_host_matches(h, a) for a in self.allowed_hosts):
            raise PaymentRefused(
                f"refused: {host} is not in the policy's allowed hosts ({', '.join(self.allowed_hosts) or 'none'})",
                rule="allowed_hosts", offers=offers, knob="allowed_hosts", advice="add it to {knob} to pay it",
            )

    def payee_for(self, host: str) -> str | None:
        """The pinned payee (node pubkey) for `host`, if the person pinned one."""
        h = host.lower()
        for pattern, pubkey in self.payees.items():
            if _host_matches(h, pattern):
                return pubkey
        return None

    def needs_approval(self) -> bool:
        return self.approve is not None

    def approver_is_async(self) -> bool:
        return self.approve is not None and inspect.iscoroutinefunction(self.approve)


def _host_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` names no host as a person meant it (None: it is one), said before it silently
    matches nothing: '*' (no wildcard for every host), a URL, a path, an empty entry."""
    p = pattern.strip()
    if p in ("*", "*.*", "**"):
        return (f"{pattern!r} is not a host: leave allowed_hosts unset to pay any host (denied_hosts still apply), "
                "or name hosts (stock.example, *.example.org)")
    if not p:
        return "an empty host name"
    if "://" in p or "/" in p or " " in p:
        return f"{p[:60]!r} is not a host name: give the host alone (stock.example, api.example:8443, *.example.org)"
    if "*" in p.removeprefix("*."):
        return f"{p[:60]!r}: '*' is allowed only as a leading '*.' (*.example.org)"
    return None


def _host_matches(host: str, pattern: str) -> bool:
    """`pattern` ("stock.example", "*.example.org", "api.example:8443") names `host` (as `host_of` gives it)."""
    p = pattern.strip().lower().lstrip(".")
    name, port = host_parts(host)  # one spelling for both sides: the per-host budget's own (httpay.hosts)
    if p.startswith("*."):
        return name.endswith("." + host_parts(p[2:])[0])
    p_name, p_port = host_parts(p)
    return name == p_name and (p_port is None or p_port == port)


def _no_such_setting(unknown: Sequence[str], names: Sequence[str]) -> ConfigError:
    """Settings Policy does not have, each with the one it is most likely a misspelling of."""
    import difflib

    near = {u: difflib.get_close_matches(u, names, 1) for u in unknown}
    hint = "; ".join(f"{u}: did you mean {m[0]}?" for u, m in near.items() if m)
    return ConfigError(f"Policy has no setting {', '.join(unknown)}" + (f" ({hint})" if hint else "")
                       + f"; its settings are {', '.join(names)}")


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """Policy's own __init__, with a misspelt setting a ConfigError naming the settings there are."""
    names = [f.name for f in fields(Policy) if f.init]

    def __init__(self: Policy, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise _no_such_setting(unknown, names)
        if len(args) > 0:
            raise ConfigError("Policy takes its settings by name, e.g. httpay.Policy(budget_usd=5)")
        init(self, **kwargs)
        object.__setattr__(self, "_ready", True)  # from now on a setting changed is checked as one given

    __init__.__doc__ = init.__doc__
    return __init__


Policy.__init__ = _checked_init(Policy.__init__)  # type: ignore[method-assign]
