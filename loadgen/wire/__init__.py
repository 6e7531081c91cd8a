"""Wire-level clients for the lab's non-HTTP and raw-socket protocols, one module per protocol."""
