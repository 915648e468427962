"""The applications built on `httpay.Client`: the `httpay` command (`cli`), the local oversight
page (`dashboard`), the approval queue a person answers (`approvals`), the views that compose
several models (`display`) and the LLM agent's tools and MCP server (`agent`). They are surfaces:
each turns a person's or an agent's intent into calls on the public client and shows what the
ledger says. The library beneath (`httpay.core`, the dialects, protocols, wallets, signers and the
ledger) never imports them, so an app can change or be left uninstalled without touching how a
payment is made (tests/core/test_architecture.py holds this).
"""
