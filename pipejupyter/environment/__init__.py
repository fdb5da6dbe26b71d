"""What workers receive of this process's environment: passthrough, MPI and SLURM sanitization,
redaction, TLS.

May import: errors, models, config.
"""
