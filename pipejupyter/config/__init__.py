"""Configuration files -> ClusterSpec: search path, the formats users already have, schema, YAML
with lines.

May import: errors, models, backend_registry (backends are looked up by name, never imported).
"""
