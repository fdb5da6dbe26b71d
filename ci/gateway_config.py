# Configuration for a REAL dask-gateway-server on loopback, used by the tests.
#
# Started by ci/gateway.sh (`python -m dask_gateway_server -f ci/gateway_config.py`);
# everything variable comes from the environment:
#
#   GATEWAY_PORT        private API server port          (default 18000)
#   GATEWAY_PROXY_PORT  proxy port: the one clients use  (default 18001)
#   GATEWAY_PASSWORD    shared password, any user name   (default pipejupyter-test)
#   GATEWAY_STATE_DIR   cluster working directories go to <state>/clusters
#                       (default: <repo>/.ci-state/gateway)
#
# Facts this file relies on (dask-gateway-server 2026.3.0):
# - settings are `c.DaskGateway.*`; a `c.Gateway.*` setting is silently ignored.
# - the proxy binds every interface unless `c.Proxy.address` is set.  Keep a single proxy
#   port: a separate Proxy.tcp_address needs `proxy_address=` in every client, or each
#   connect hangs for 30 s.
# - the non-Unsafe LocalBackend is broken in 2026.3.0 (it chowns each character of a
#   path); UnsafeLocalBackend runs clusters as the server's user, which is all we want.
# - cluster processes only inherit a whitelist of the server's environment
#   (PATH, VIRTUAL_ENV, LANG, ...); the options handler below adds the user's
#   `environment` plus the PIPEJUPYTER_GATEWAY_STATE marker, which ci/gateway.sh uses to
#   find (and kill) any scheduler/worker that outlives the server.

import os
import sys

from dask_gateway_server.options import Float, Integer, Mapping, Options

c = get_config()  # noqa: F821  (injected by traitlets when the file is loaded)

_here = os.path.dirname(os.path.abspath(__file__))
_state = os.path.abspath(
    os.environ.get("GATEWAY_STATE_DIR")
    or os.path.join(os.path.dirname(_here), ".ci-state", "gateway")
)
_port = int(os.environ.get("GATEWAY_PORT", "18000"))
_proxy_port = int(os.environ.get("GATEWAY_PROXY_PORT", "18001"))
_password = os.environ.get("GATEWAY_PASSWORD", "pipejupyter-test")
# Marker put into the environment of every scheduler and worker.  ci/gateway.sh also sets
# it for the server itself (and so for the proxy it spawns).
_marker = os.environ.get("PIPEJUPYTER_GATEWAY_STATE", _state)

# The `dask` of the venv whose python runs the server (sys.executable, not resolved:
# resolving a venv's python symlink would leave the venv).
_bin = os.path.dirname(sys.executable)
_dask = os.path.join(_bin, "dask")

# --- server, proxy, auth, backend -------------------------------------------------------
c.DaskGateway.address = f"127.0.0.1:{_port}"
c.Proxy.address = f"127.0.0.1:{_proxy_port}"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = _password
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.log_level = os.environ.get("GATEWAY_LOG_LEVEL", "INFO")

# --- clusters ---------------------------------------------------------------------------
c.ClusterConfig.scheduler_cmd = [_dask, "scheduler"]
c.ClusterConfig.worker_cmd = [_dask, "worker"]
c.LocalBackend.clusters_directory = os.path.join(_state, "clusters")
# The 15 s default makes scale(2) take ~30 s.
c.LocalBackend.cluster_heartbeat_period = 1
# Notice dead schedulers/workers quickly.
c.LocalBackend.cluster_status_period = 5
c.LocalBackend.worker_status_period = 5
# Shutdown: SIGINT, then SIGTERM, then SIGKILL (defaults 10/5/5 s).
c.LocalBackend.sigint_timeout = 5
c.LocalBackend.sigterm_timeout = 3
c.LocalBackend.sigkill_timeout = 3
# A test machine has few cores: refuse runaway scale() calls.
c.ClusterConfig.cluster_max_workers = int(os.environ.get("GATEWAY_MAX_WORKERS", "4"))


def _options_handler(options):
    env = {str(k): str(v) for k, v in dict(options.environment).items()}
    env["PIPEJUPYTER_GATEWAY_STATE"] = _marker
    return {
        "worker_cores": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "environment": env,
    }


c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", 1, min=0.25, max=4, label="Worker memory (GiB)"),
    Mapping("environment", default={}, label="Environment variables"),
    handler=_options_handler,
)
