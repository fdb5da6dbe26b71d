"""Helpers shared by the tests, in one place. The fixtures every test may use (``isolated``,
``no_leaks``) are in tests/conftest.py; a fixture for one service (``gw``, ``shell``,
``slurm_clean``, ...) lives here beside its helpers, imported by name where it is used.

common     paths, process and port checks, ``require``, ``run_cli``, config-file writing
gateway    a REAL dask-gateway-server (ci/gateway.sh) and the ``gw`` fixture
lab        a real ``jupyter lab`` and Debian's Chromium driven by Playwright
magics     a real IPython shell with the extension loaded (the ``shell`` fixture)
notebooks  executing notebooks in a real kernel (the ``kernel_env`` fixture)
security   checks that a scheduler refuses a client
server     the jupyter_server extension in this process (pytest-jupyter fixtures)
slurm      the real SLURM of ci/slurm.sh (the ``slurm_clean`` fixture)
"""
