"""Backends: the contract (base), and local, address, kubernetes; jobqueue/ and gateway/ for
their families.

May import: errors, models, backend_registry, config, environment. Never lifecycle or anything
above.
"""
