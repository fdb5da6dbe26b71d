# JupyterHub configuration for the tests (started by ci/hub.sh; not for production use).
#
# The hub, its configurable-http-proxy and every single-user server listen on 127.0.0.1.
# A user logs in with DummyAuthenticator's shared password; the hub submits the user's
# JupyterLab as a SLURM job (batchspawner's SlurmSpawner) that runs as that Linux user.
# Every value comes from ci/hub.sh through HUB_* environment variables.
# ruff: noqa: F821  (`c` is the config object JupyterHub passes in)
import os

import batchspawner  # noqa: F401  (registers the hub's /hub/api/batchspawner route)
from batchspawner import SlurmSpawner
from traitlets import Unicode

state = os.environ["HUB_STATE_DIR"]
user_venv = os.environ["HUB_USER_VENV"]


class LoopbackSlurmSpawner(SlurmSpawner):
    """SlurmSpawner whose single-user server listens on loopback.

    batchspawner's start() resets the server's ip to this trait's class default
    (0.0.0.0 in Spawner), so `c.Spawner.ip` alone is ignored.
    """

    ip = Unicode("127.0.0.1").tag(config=True)


def without_pipejupyter(spawner):
    """`{"pipejupyter": "off"}` as server options starts the lab without pipejupyter's
    server extension (to measure what it adds to a spawn). JupyterHub reuses a server's
    last options when a start gives none: ask with `{"pipejupyter": "on"}` explicitly."""
    env = dict(spawner.environment)
    env.pop("JUPYTER_CONFIG_PATH", None)
    if (spawner.user_options or {}).get("pipejupyter") == "off":
        env["JUPYTER_CONFIG_PATH"] = os.path.join(state, "no-pipejupyter")
    spawner.environment = env


c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ['HUB_PORT']}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ["HUB_INTERNAL_PORT"])
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['HUB_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.command = [os.environ["HUB_CHP"]]
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "proxy.pid")
c.JupyterHub.cookie_secret_file = os.path.join(state, "cookie_secret")
c.JupyterHub.db_url = f"sqlite:///{os.path.join(state, 'jupyterhub.sqlite')}"
c.JupyterHub.pid_file = os.path.join(state, "hub.pid")
# Tests start and stop servers back to back: no waiting for a slow spawn to count.
c.JupyterHub.concurrent_spawn_limit = 10
c.JupyterHub.cleanup_servers = True

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["HUB_PASSWORD"]
c.Authenticator.allowed_users = {os.environ["HUB_USER"]}

# The tests drive the hub's REST API with a service token.
c.JupyterHub.services = [{"name": "pipejupyter-tests", "api_token": os.environ["HUB_API_TOKEN"]}]
c.JupyterHub.load_roles = [
    {
        "name": "pipejupyter-tests",
        "scopes": ["admin:users", "admin:servers", "access:servers", "tokens"],
        "services": ["pipejupyter-tests"],
    }
]

c.JupyterHub.spawner_class = LoopbackSlurmSpawner
c.Spawner.pre_spawn_hook = without_pipejupyter
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.cmd = [os.path.join(user_venv, "bin", "jupyterhub-singleuser")]
c.Spawner.env_keep = ["LANG", "LC_ALL", "SLURM_CONF"]
# Else the lab gets the hub's PATH (and so the hub's python and jupyter).
c.Spawner.environment = {"PATH": f"{user_venv}/bin:/usr/bin:/bin"}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.BatchSpawnerBase.exec_prefix = ""  # the hub is root: no sudo
c.BatchSpawnerBase.batchspawner_singleuser_cmd = os.path.join(
    user_venv, "bin", "batchspawner-singleuser"
)
c.BatchSpawnerBase.req_partition = os.environ.get("HUB_PARTITION", "debug")
c.BatchSpawnerBase.req_memory = "1G"
c.BatchSpawnerBase.req_nprocs = "1"
c.BatchSpawnerBase.req_runtime = "00:45:00"
# slurmd puts its own SLURM_CONF into every step's environment, and ci/slurm.sh keeps that
# file readable by root only: the lab's nested sbatch must use ci/hub.sh's copy. So the lab
# runs in the batch step itself (no srun, which would set slurmd's path again).
c.BatchSpawnerBase.req_prologue = f"export SLURM_CONF={state}/slurm.conf"
c.SlurmSpawner.req_srun = ""
# Without --gid the job runs with group 0.
c.SlurmSpawner.batch_submit_cmd = "sbatch --parsable --uid={username} --gid={username}"
c.SlurmSpawner.state_exechost_exp = "127.0.0.1"
