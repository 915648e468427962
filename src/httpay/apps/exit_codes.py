"""The command's exit codes, one place for every command that ends with one (`httpay`, its demo)."""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED, EXIT_PAYMENT, EXIT_NETWORK, EXIT_HTTP = 0, 1, 2, 3, 4, 5, 6
EXIT_CODES = (
    (EXIT_OK, "success (the service answered 2xx/3xx)"),
    (EXIT_ERROR, "an error: a setting is missing or wrong, a ledger does not exist, ..."),
    (EXIT_USAGE, "usage: a bad flag, a bad number, a URL that is not http:// or https://"),
    (EXIT_REFUSED, ("refused: over a limit (the cost cap, a budget), by the policy or a person, or an invoice that "
                    "failed a check before paying; an answer to an approval no request waits for any more; nothing paid")),
    (EXIT_PAYMENT, ("the payment failed, was made but not honoured, or its outcome is not known yet "
                    "(`ledger reconcile`: a payment stays pending); the ledger says which")),
    (EXIT_NETWORK, ("network: could not connect, unknown host, timed out, a wallet that cannot be reached (the payment "
                   "deadline too; nothing paid)")),
    (EXIT_HTTP, ("the service answered an HTTP error (4xx/5xx), an answer that cannot be read (headers too large, "
                 "not HTTP), or a 402 nothing here can pay (no wallet or signer for it, only methods httpay cannot "
                 "pay, a 402 that cannot be read); nothing paid")),
)

# Refusals that are no one's decision: nothing configured here can pay what the 402 asks for
NOTHING_PAYS = frozenset({"unpayable", "no_wallet", "no_signer", "rail"})


def refusal_code(rule: str) -> int:
    """A refusal's exit code: 6 when nothing here could pay the 402 (no wallet or signer for it, a
    method httpay cannot pay, offers its dialect cannot check), else 3 (a limit, the policy, a person)."""
    from httpay.core.dialect import dialects

    return EXIT_HTTP if rule in NOTHING_PAYS or rule in {d.name for d in dialects()} else EXIT_REFUSED

