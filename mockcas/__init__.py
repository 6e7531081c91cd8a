"""mockcas: a mock Exchange 2010 Client Access Server that keeps server-local state.

Outlook Anywhere sends the HTTP methods RPC_IN_DATA and RPC_OUT_DATA, which aiohttp's C parser rejects
with 400 "Invalid method encountered"; its pure-Python parser accepts them. The switch is read when
aiohttp is first imported, so it is set here, before anything in this package imports aiohttp.
"""

import os
import sys

if "aiohttp" in sys.modules and os.environ.get("AIOHTTP_NO_EXTENSIONS") != "1":
    raise ImportError(
        "mockcas must be imported before aiohttp (or run with AIOHTTP_NO_EXTENSIONS=1): "
        "aiohttp's C parser rejects Outlook Anywhere's RPC_IN_DATA/RPC_OUT_DATA methods"
    )
os.environ["AIOHTTP_NO_EXTENSIONS"] = "1"
