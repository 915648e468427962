"""`EvmSigner`: one EVM key that signs x402 `exact` payments (EIP-3009 by EIP-712 typed data).

It wraps an eth-account `LocalAccount` (install with `pip install httpay[x402]`). The key
stays inside: repr, str, errors and the ledger only ever see the address.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from httpay.errors import ConfigError, WalletError


def _eth_account() -> Any:
    try:
        import eth_account
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("paying x402 needs eth-account: pip install 'httpay[x402]'") from None
    return eth_account


class EvmSigner:
    """Signs x402 payment authorizations with one EVM account.

    `networks` limits where it pays (CAIP-2 ids such as "eip155:8453" or x402 v1 names such as
    "base"); None lets it pay on any EVM network the policy allows.
    """

    __slots__ = ("_account", "_key", "networks")

    def __init__(self, account: Any, *, networks: Sequence[str] | None = None) -> None:
        if not callable(getattr(account, "sign_typed_data", None)) or not isinstance(getattr(account, "address", None), str):
            raise ConfigError(
                f"EvmSigner needs an eth-account LocalAccount (e.g. Account.from_key(...)), got {type(account).__name__}"
            )
        if isinstance(networks, str):
            networks = (networks,)
        self._account = account
        self._key = _private_key(account)
        self.networks: tuple[str, ...] | None = tuple(networks) if networks is not None else None

    @classmethod
    def from_key(cls, private_key: str | bytes, *, networks: Sequence[str] | None = None) -> EvmSigner:
        """A signer for a private key (32 bytes, or 64 hex characters with or without 0x)."""
        eth = _eth_account()
        try:
            account = eth.Account.from_key(private_key)
        except Exception:  # noqa: BLE001 - the library's message may echo the key
            raise ConfigError("EvmSigner.from_key: not a private key (expected 32 bytes or 64 hex characters)") from None
        return cls(account, networks=networks)

    @classmethod
    def from_env(cls, variable: str = "HTTPAY_EVM_KEY", *, networks: Sequence[str] | None = None) -> EvmSigner:
        """A signer for the private key in an environment variable (kept out of code and shell history)."""
        value = os.environ.get(variable, "").strip()
        if not value:
            raise ConfigError(f"set {variable} to the EVM private key that pays x402 services")
        return cls.from_key(value, networks=networks)

    @classmethod
    def create(cls, *, networks: Sequence[str] | None = None) -> EvmSigner:
        """A signer with a fresh random key: for tests and demos (the key is lost with the object)."""
        return cls(_eth_account().Account.create(), networks=networks)

    @property
    def in_process(self) -> bool:
        """True when the key is held here: signing is pure computation (tens of microseconds), so an
        async driver signs inline instead of handing it to a worker thread."""
        return self._key is not None

    @property
    def address(self) -> str:
        """The checksummed address that pays (the `from` of every authorization)."""
        return str(self._account.address)

    @property
    def name(self) -> str:
        """How the ledger names this payer: `evm:<address>`."""
        return f"evm:{self.address}"

    def pays_on(self, network: str) -> bool:
        """True when this signer may pay on `network` (no restriction, or listed)."""
        return self.networks is None or network in self.networks

    def sign_typed_data(self, domain: Mapping[str, Any], types: Mapping[str, Sequence[Mapping[str, str]]],
                        primary_type: str, message: Mapping[str, Any]) -> bytes:
        """The 65-byte EIP-712 signature (r, s, v) of `message` under `domain`: the digest computed by
        httpay's own encoder and signed with coincurve when the key is held here (the same bytes
        eth-account gives, RFC 6979 deterministic), else eth-account's own signing."""
        from httpay.signers.eip712 import typed_data_digest  # eth-hash comes with the x402 extra

        digest = typed_data_digest(domain, types, primary_type, message) if self._key is not None else None
        if digest is not None and self._key is not None:
            signature = bytes(self._key.sign_recoverable(digest, hasher=None))
            return signature[:64] + bytes([signature[64] + 27])
        full = {
            "types": {"EIP712Domain": _domain_fields(domain), **{k: [dict(f) for f in v] for k, v in types.items()}},
            "primaryType": primary_type,
            "domain": dict(domain),
            "message": dict(message),
        }
        try:
            signed = self._account.sign_typed_data(full_message=full)
        except Exception as exc:  # noqa: BLE001 - never echo what the library says about the key
            raise WalletError(f"the EVM signer could not sign the {primary_type} message ({type(exc).__name__})") from None
        return bytes(signed.signature)

    def sign_message(self, message: str) -> bytes:
        """The 65-byte EIP-191 (personal_sign) signature of a text message: a sign-in (SIWE), never a payment."""
        from eth_account.messages import encode_defunct

        try:
            signed = self._account.sign_message(encode_defunct(text=message))
        except Exception as exc:  # noqa: BLE001 - never echo what the library says about the key
            raise WalletError(f"the EVM signer could not sign the message ({type(exc).__name__})") from None
        return bytes(signed.signature)

    def __repr__(self) -> str:
        nets = "" if self.networks is None else f", networks={list(self.networks)!r}"
        return f"EvmSigner(address={self.address!r}{nets})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an EvmSigner holds a private key and is not pickled; build it again from its source")


def _private_key(account: Any) -> Any:
    """A coincurve key for an eth-account LocalAccount's key (None for any other account object)."""
    from coincurve import PrivateKey

    key = getattr(account, "key", None)
    if not isinstance(key, bytes) or len(key) != 32:
        return None
    try:
        return PrivateKey(key)
    except Exception:  # noqa: BLE001 - not a usable secp256k1 key: leave signing to eth-account
        return None


def _domain_fields(domain: Mapping[str, Any]) -> list[dict[str, str]]:
    kinds = {"name": "string", "version": "string", "chainId": "uint256", "verifyingContract": "address",
             "salt": "bytes32"}
    return [{"name": k, "type": kinds[k]} for k in kinds if k in domain]
