"""Pipeline stages: run_stage, the runner, batch planning, inputs, placement, results, the
SQLite context store.

May import: errors, models, config, environment, lifecycle, work. Never a face (notebook,
server, cli).
"""
