"""The ledger contract, run on every backend."""
