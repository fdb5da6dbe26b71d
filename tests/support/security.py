"""Transport-security checks shared by the local and the SLURM security tests."""

from __future__ import annotations

import pytest


def assert_refused(address: str, expect: type[BaseException] = Exception, **kwargs) -> None:
    """Client(address) fails; the half-made Client is closed here and now (see
    pipejupyter.lifecycle.client: left open, it stalls a later Client's start)."""
    from distributed import Client

    from pipejupyter.lifecycle.client import release_failed_client

    with pytest.raises(expect) as info:
        Client(address, timeout=3, set_as_default=False, **kwargs)
    release_failed_client(info.value)
