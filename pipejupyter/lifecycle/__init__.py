"""Cluster lifecycle: start, connect, find, list, stop - the ClusterManager (with a default
instance), handles and their model, discovery files, Clients.

May import: errors, models, backend_registry, config, environment, backends.
"""
