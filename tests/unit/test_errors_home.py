"""Every error httpay raises on purpose lives in `httpay.errors` and is importable from `httpay`,
so a caller catches it without knowing which module raised it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import httpay
import httpay.errors


# Being moved into httpay.errors with the payment core's rewrite (issue 11); until then they may
# still live where the flow raises them. Nothing else may.
def _errors_defined_outside() -> dict[str, str]:
    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(httpay.__path__, "httpay."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, httpay.HttpayError) and obj.__module__ == info.name
                    and info.name != "httpay.errors"):
                found[name] = info.name
    return found


def test_no_httpay_error_is_defined_outside_httpay_errors() -> None:
    stray = {name: where for name, where in _errors_defined_outside().items()
             }
    assert not stray, f"define these in httpay/errors.py (and export them from httpay): {stray}"


@pytest.mark.parametrize("name", ["ApprovalError", "DuplicatePayment", "ChallengeInFlight", "UsageError", "LoopbackOnly"])
def test_errors_moved_here_keep_their_old_names_and_meaning(name: str) -> None:
    cls = getattr(httpay.errors, name)
    assert getattr(httpay, name) is cls and name in httpay.__all__
    assert issubclass(cls, httpay.HttpayError)


def test_every_error_in_httpay_errors_is_importable_from_httpay() -> None:
    errors = {n for n, o in vars(httpay.errors).items()
              if inspect.isclass(o) and issubclass(o, httpay.HttpayError) and o.__module__ == "httpay.errors"}
    missing = sorted(n for n in errors if n not in httpay.__all__ or getattr(httpay, n) is not getattr(httpay.errors, n))
    assert not missing, f"add to httpay.__all__: {missing}"


def test_old_import_paths_still_work() -> None:
    from httpay.apps.approvals import ApprovalError
    from httpay.ledger import ChallengeInFlight, DuplicatePayment
    from httpay.loopback import LoopbackOnly

    assert ApprovalError is httpay.ApprovalError and DuplicatePayment is httpay.DuplicatePayment
    assert ChallengeInFlight is httpay.ChallengeInFlight and LoopbackOnly is httpay.LoopbackOnly
    assert issubclass(LoopbackOnly, ValueError) and issubclass(LoopbackOnly, httpay.ConfigError)
    assert httpay.DuplicatePayment("x", existing=None).rule == "duplicate"
    assert httpay.ChallengeInFlight("x", existing=None).rule == "in_flight"
