"""What workers receive of this process's environment: passthrough, MPI and SLURM sanitization,
redaction, TLS; and the dashboard links a browser of this process's Jupyter server opens.

May import: errors, models, config.
"""
