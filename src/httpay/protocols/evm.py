"""EVM payment facts that more than one dialect pays with (x402's `exact`, MPP's `evm` charge): the
USD stablecoins whose contracts, decimals and EIP-712 domains are public, the EIP-3009
authorization's typed data, and how long httpay lets one stay valid. Facts, not a dialect: each
dialect reads its own wire format and takes these from here.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TIMEOUT_S = 3600          # never sign an authorization that stays valid longer than an hour


@dataclass(frozen=True)
class KnownAsset:
    """A USD stablecoin whose contract, decimals and EIP-712 domain are public facts."""

    symbol: str
    decimals: int
    eip712_name: str
    eip712_version: str


# Circle's USDC deployments (6 decimals) on the chains x402 servers use.
KNOWN_ASSETS: dict[tuple[int, str], KnownAsset] = {
    (1, "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (8453, "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (84532, "0x036cbd53842c5426634e7929541ec2318f3dcf7e"): KnownAsset("USDC", 6, "USDC", "2"),
    (137, "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (42161, "0xaf88d065e77c8cc2239327c5edb3a432268e5831"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (421614, "0x75faf114eafb1bdbe2f0316df893fd58ce46aa4d"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (43114, "0xb97ef9ef8734c71904d8002f8b6bc66dd9c48a6e"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (43113, "0x5425890298aed601595a70ab815c96711a31bc65"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (10, "0x0b2c639c533813f4aa9d7837caf62653d097ff85"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (11155420, "0x5fd84259d66cd46123540766be93dfe6d43130d7"): KnownAsset("USDC", 6, "USDC", "2"),
    (11155111, "0x1c7d4b196cb0c7b01d743fbc6116a902379c7238"): KnownAsset("USDC", 6, "USDC", "2"),
}

AUTHORIZATION_TYPES: dict[str, list[dict[str, str]]] = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
    ],
}


__all__ = ["AUTHORIZATION_TYPES", "KNOWN_ASSETS", "MAX_TIMEOUT_S", "KnownAsset"]
