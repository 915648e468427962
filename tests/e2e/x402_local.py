"""A paid x402 service made of the PyPI `x402` package's own parts, with no blockchain.

The resource server is their FastAPI middleware; the facilitator is their in-process
`x402Facilitator` with their real `exact` EVM scheme, which checks the client's EIP-712
signature itself (ECDSA recovery). Only the chain is local: `LocalChain` stands in for the
USDC contract (balances, used nonces, `transferWithAuthorization`), and it too recovers the
signer before moving money, as the real contract does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

BASE_SEPOLIA = "eip155:84532"
BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"  # the x402 package's default asset there

_AUTH_FIELDS = [
    {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
]


class Reverted(Exception):
    """What an eth_call or transaction would revert with."""


@dataclass
class LocalChain:
    """One EIP-3009 token on one chain, in memory: enough for the facilitator's `FacilitatorEvmSigner`."""

    chain_id: int = 84532
    token: str = BASE_SEPOLIA_USDC
    name: str = "USDC"
    version: str = "2"
    balances: dict[str, int] = field(default_factory=dict)
    used_nonces: set[tuple[str, bytes]] = field(default_factory=set)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    facilitator: str = field(default_factory=lambda: Account.create().address)

    def balance(self, address: str) -> int:
        return self.balances.get(address.lower(), 0)

    def fund(self, address: str, amount: int) -> None:
        self.balances[address.lower()] = self.balance(address) + amount

    # -- FacilitatorEvmSigner ------------------------------------------------------------------
    def get_addresses(self) -> list[str]:
        return [self.facilitator]

    def get_chain_id(self) -> int:
        return self.chain_id

    def get_code(self, address: str) -> bytes:
        return b"\x60\x80\x60\x40" if address.lower() == self.token.lower() else b""

    def get_balance(self, address: str, token_address: str) -> int:
        return self.balance(address)

    def verify_typed_data(self, address: str, domain: Any, types: Any, primary_type: str, message: dict[str, Any],
                          signature: bytes) -> bool:
        raise NotImplementedError("the exact scheme recovers EOA signatures itself")

    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        if address.lower() != self.token.lower():
            raise Reverted(f"execution reverted: no contract at {address}")
        if function_name == "transferWithAuthorization":
            self._check_transfer(*args)
            return None
        if function_name == "balanceOf":
            return self.balance(args[0])
        if function_name == "name":
            return self.name
        if function_name == "version":
            return self.version
        if function_name == "authorizationState":
            return (args[0].lower(), bytes(args[1])) in self.used_nonces
        raise Reverted(f"execution reverted: {function_name} is not implemented by the local token")

    def write_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any,
                       data_suffix: str | None = None) -> str:
        if function_name != "transferWithAuthorization" or address.lower() != self.token.lower():
            raise Reverted(f"execution reverted: {function_name}")
        frm, to, value, _after, _before, nonce = self._check_transfer(*args)
        self.balances[frm.lower()] -= value
        self.fund(to, value)
        self.used_nonces.add((frm.lower(), nonce))
        tx = "0x" + hashlib.sha256(b"tx" + nonce + len(self.transactions).to_bytes(4, "big")).hexdigest()
        self.transactions.append({"hash": tx, "from": frm, "to": to, "value": value, "nonce": "0x" + nonce.hex()})
        return tx

    def send_transaction(self, to: str, data: bytes) -> str:
        raise Reverted("execution reverted: the local chain deploys nothing")

    def wait_for_transaction_receipt(self, tx_hash: str) -> Any:
        from x402.mechanisms.evm.types import TransactionReceipt

        known = any(t["hash"] == tx_hash for t in self.transactions)
        return TransactionReceipt(status=1 if known else 0, block_number=len(self.transactions), tx_hash=tx_hash)

    # -- the token's own rules -------------------------------------------------------------------
    def _check_transfer(self, frm: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes,
                        *sig: Any) -> tuple[str, str, int, int, int, bytes]:
        import time

        nonce = bytes(nonce)
        now = int(time.time())
        if not valid_after < now < valid_before:
            raise Reverted("execution reverted: FiatTokenV2: authorization is not yet valid or expired")
        if (frm.lower(), nonce) in self.used_nonces:
            raise Reverted("execution reverted: FiatTokenV2: authorization is used or canceled")
        if len(sig) == 3:
            v, r, s = sig
            signature = bytes(r) + bytes(s) + bytes([v])
        else:
            signature = bytes(sig[0])
        typed = {
            "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                       {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}],
                      "TransferWithAuthorization": _AUTH_FIELDS},
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": self.name, "version": self.version, "chainId": self.chain_id,
                       "verifyingContract": self.token},
            "message": {"from": frm, "to": to, "value": value, "validAfter": valid_after, "validBefore": valid_before,
                        "nonce": nonce},
        }
        signer = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
        if signer.lower() != frm.lower():
            raise Reverted("execution reverted: FiatTokenV2: invalid signature")
        if self.balance(frm) < value:
            raise Reverted("execution reverted: ERC20: transfer amount exceeds balance")
        return frm, to, value, valid_after, valid_before, nonce


def paid_app(chain: LocalChain, pay_to: str, *, price: str = "$0.01", network: str = BASE_SEPOLIA) -> Any:
    """A FastAPI app whose `/weather` costs `price` in USDC through the x402 package's own middleware."""
    from fastapi import FastAPI
    from x402 import x402Facilitator, x402ResourceServer
    from x402.http.middleware.fastapi import payment_middleware
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme

    facilitator = x402Facilitator()
    facilitator.register([network], ExactEvmFacilitatorScheme(chain))
    server = x402ResourceServer(facilitator)
    server.register(network, ExactEvmServerScheme())
    routes = {"GET /weather": {"accepts": {"scheme": "exact", "payTo": pay_to, "price": price, "network": network},
                               "description": "today's weather", "mimeType": "application/json"}}
    app = FastAPI()
    app.state.served = 0
    middleware = payment_middleware(routes, server)

    @app.middleware("http")
    async def x402_middleware(request: Any, call_next: Any) -> Any:
        return await middleware(request, call_next)

    @app.get("/weather")
    async def weather() -> dict[str, Any]:
        app.state.served += 1
        return {"report": "sunny", "temperature": 21}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"ok": "yes"}

    return app
