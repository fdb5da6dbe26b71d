"""Transport security and loopback binding for clusters we start."""

from __future__ import annotations

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")


def test_tls_profile_refuses_clients_without_its_certificate():
    from distributed import Client
    from distributed.security import Security

    handle = pipejupyter.start(workers=1, overrides=["security=tls"], timeout=60)
    try:
        assert handle.scheduler_address.startswith("tls://127.0.0.1:")
        assert handle.client.submit(sum, [1, 2]).result() == 3
        with pytest.raises(Exception):  # noqa: B017 - no certificate at all
            Client(handle.scheduler_address, timeout=3, set_as_default=False)
        with pytest.raises(OSError):  # a certificate from another authority
            Client(handle.scheduler_address, security=Security.temporary(), timeout=3, set_as_default=False)
        with pytest.raises(OSError):  # plain TCP to the TLS port
            Client(handle.scheduler_address.replace("tls://", "tcp://"), timeout=3, set_as_default=False)
    finally:
        handle.stop()


def test_bad_security_value_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot use security 'ssl'.*accepted: null, tls"):
        pipejupyter.start(workers=1, overrides=["security=ssl"])
    assert pipejupyter.clusters() == []


def test_scheduler_dashboard_and_workers_bind_loopback_by_default():
    import psutil

    handle = pipejupyter.start(workers=1, timeout=60)
    try:
        model = handle.model()
        assert model["scheduler_address"].startswith("tcp://127.0.0.1:")
        assert model["dashboard_link"].startswith("http://127.0.0.1:")
        assert all(w["address"].startswith("tcp://127.0.0.1:") for w in model["worker_info"])
        # Worker processes listen only on loopback; in this process (which also hosts other
        # tests' servers) the scheduler's and the dashboard's sockets do.
        import os
        from urllib.parse import urlparse

        workers = set(handle.client.run(os.getpid).values())
        ours = {urlparse(model["scheduler_address"]).port, urlparse(model["dashboard_link"]).port}
        listening = [
            c.laddr for c in psutil.net_connections(kind="tcp")
            if c.status == "LISTEN" and (c.pid in workers or (c.pid == os.getpid() and c.laddr.port in ours))
        ]
        assert len([a for a in listening if a.port in ours]) >= 2
        assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    finally:
        handle.stop()
