"""Sans-I/O readers and writers for each 402 protocol."""

from httpay.protocols.l402_v02 import (
    Offer,
    OfferList,
    PaymentOffers,
    PaymentRequest,
    parse,
)

__all__ = ["Offer", "OfferList", "PaymentOffers", "PaymentRequest", "parse"]
