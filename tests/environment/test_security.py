"""Transport security and loopback binding for clusters we start."""

from __future__ import annotations

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError
from tests.support.security import assert_refused

pytestmark = pytest.mark.usefixtures("isolated", "no_leaks")


def test_tls_profile_refuses_clients_without_its_certificate():
    from distributed.security import Security

    handle = pipejupyter.start(workers=1, overrides=["security=tls"], timeout=60)
    try:
        assert handle.scheduler_address.startswith("tls://127.0.0.1:")
        assert handle.client.submit(sum, [1, 2]).result() == 3
        assert_refused(handle.scheduler_address)  # no certificate at all
        assert_refused(
            handle.scheduler_address, OSError, security=Security.temporary()
        )  # another authority's
        assert_refused(
            handle.scheduler_address.replace("tls://", "tcp://"), OSError
        )  # plain TCP to the TLS port
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
            c.laddr
            for c in psutil.net_connections(kind="tcp")
            if c.status == "LISTEN"
            and (c.pid in workers or (c.pid == os.getpid() and c.laddr.port in ours))
        ]
        assert len([a for a in listening if a.port in ours]) >= 2
        assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    finally:
        handle.stop()


def _config_file(directory, profiles: dict):
    import yaml

    path = directory / "profiles.yaml"
    path.write_text(yaml.safe_dump({"pipecluster": {"profiles": profiles}}))
    return path


def _pem_files(directory) -> dict:
    """A CA, certificate and key as PEM files (from distributed's temporary credentials)."""
    from distributed.security import Security

    made = Security.temporary()
    files = {}
    for name, text in (
        ("ca_file", made.tls_ca_file),
        ("cert", made.tls_client_cert),
        ("key", made.tls_client_key),
    ):
        path = directory / f"{name}.pem"
        path.write_text(text)
        files[name] = str(path)
    return files


def test_certificate_files_for_a_local_cluster_and_an_address_profile_that_connects_to_it(tmp_path):
    files = _pem_files(tmp_path)
    owner = pipejupyter.start(
        workers=1, overrides={"security": files}, timeout=60, set_default=False
    )
    try:
        assert owner.scheduler_address.startswith("tls://")
        settings = _config_file(
            tmp_path, {"there": {"backend": "address", "address": owner.scheduler_address}}
        )
        guest = pipejupyter.start(
            "there", config=settings, overrides={"security": files}, set_default=False, timeout=20
        )
        assert guest.client.submit(sum, [4, 5]).result() == 9
        guest.stop()
        # Without the files: refused, nothing kept.
        with pytest.raises(pipejupyter.errors.ClusterError):
            pipejupyter.start("there", config=settings, set_default=False, timeout=5)
        assert [h.id for h in pipejupyter.clusters()] == [owner.id]
    finally:
        owner.stop()


@pytest.mark.parametrize(
    "backend,body,says",
    [
        ("gateway", {"address": "http://127.0.0.1:9"}, "a gateway secures its clusters itself"),
        ("kubernetes", {}, "set TLS up in the pod specs"),
        (
            "address",
            {"address": "tls://127.0.0.1:9"},
            "give the files of the scheduler's certificates",
        ),
    ],
)
def test_security_a_backend_cannot_honour_is_refused_before_anything_starts(
    tmp_path, backend, body, says
):
    settings = _config_file(tmp_path, {"p": {"backend": backend, "security": "tls", **body}})
    with pytest.raises(ConfigError) as err:
        pipejupyter.dry_run("p", config=settings)
    text = str(err.value)
    assert says in text
    assert "profiles.p.security" in text
    assert f"the {backend} backend cannot use security tls" in text
    assert pipejupyter.clusters() == []


def test_a_refused_connect_leaves_no_half_made_client_behind():
    """distributed leaves a Client that failed in __init__ open, its loop thread running; a
    later garbage collection then closes it inside the next Client's start and stalls that
    start 10 s into an AssertionError. A failed connect must close it at once."""
    import gc
    import threading

    from distributed import Client

    from tests.support.common import wait_until

    def loop_threads() -> int:
        return sum(t.name == "IO loop" for t in threading.enumerate())

    handle = pipejupyter.start(workers=1, overrides=["security=tls"], timeout=60, set_default=False)
    gc.collect()
    before = loop_threads()
    gc.disable()  # only the code under test may collect
    try:
        with pytest.raises(pipejupyter.errors.ClusterError, match="cannot connect"):
            pipejupyter.connect(handle.scheduler_address, set_default=False, timeout=3)
        open_clients = [
            o
            for o in gc.get_objects()
            if isinstance(o, Client) and o is not handle.client and o.status != "closed"
        ]
        assert open_clients == []
        assert wait_until(lambda: loop_threads() <= before, timeout=5), (
            "the failed Client's loop thread is still running"
        )
    finally:
        gc.enable()
        handle.stop()
