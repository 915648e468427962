"""Signers: keys that authorize payments which are not Lightning invoices (x402 on EVM chains).

A signer is a small adapter like a wallet: it holds a key, signs what the pipeline hands it,
and never lets the key reach a repr, a log, an error or the ledger.
"""

from httpay.signers.evm import EvmSigner

__all__ = ["EvmSigner"]
