"""httpay's demo: a local copy of the stock.l402.org service and an in-memory Lightning network.

DEMO only: nothing here moves real money. The client code never imports this package; the
`httpay demo-server` command and the tests do.
"""

from httpay.extras import require

require("demo")

from httpay.demo.network import DemoNetwork, LightningError
from httpay.demo.runner import run, serve_in_thread
from httpay.demo.server import create_app

__all__ = ["DemoNetwork", "LightningError", "create_app", "run", "serve_in_thread"]
