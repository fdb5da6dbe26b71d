"""The dask-jobqueue family (SLURM, PBS, SGE, LSF, HTCondor, OAR, Moab): base, schedulers, job
script, sizing, SLURM limits.

May import: errors, models, config, environment, backends.base.
"""
