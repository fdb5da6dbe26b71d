"""Dask Gateway: the backend, one session with a server, its option spec, finding and attaching
other processes' clusters.

May import: errors, models, backend_registry, config, environment, backends.base and
backends.reaper.
"""
