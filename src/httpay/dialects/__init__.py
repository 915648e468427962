"""The 402 dialects httpay speaks, each a plug-in behind `httpay.core.dialect.Dialect`.

A new dialect is one module here and one line below.
"""

from httpay.core.dialect import register
from httpay.dialects.l402_classic import L402Classic
from httpay.dialects.l402_v02 import L402V02
from httpay.dialects.mpp import Mpp
from httpay.dialects.x402 import X402

register(L402Classic())
register(L402V02())
register(X402())
register(Mpp())

__all__ = ["L402V02", "X402", "L402Classic", "Mpp"]
