"""What runs on a worker: work kinds (callables, commands), cell bodies, CASA tasks, nested MPI
and nested casampi sessions with their CPU budget, output capture.

May import: errors, models, environment. Never lifecycle, stages or any face.
"""
