"""Does a Dask scheduler answer at an address? A cheap greeting check that never hangs.

A Dask connect to a scheduler that accepts TCP but never speaks (a SIGSTOPped process, a
full backlog) waits for the greeting without a time limit; every place that is about to
connect, or that lists clusters, asks here first.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

#: what scheduler_answer() says
OPEN, REFUSED, SILENT, UNKNOWN = "open", "refused", "silent", "unknown"
#: seconds a probe waits for the scheduler's greeting by default
PROBE_TIMEOUT = 0.5


def split_address(address: str) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) of a scheduler address; ValueError when it does not parse."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    return parsed.scheme, parsed.hostname, parsed.port  # .port raises for 99999999


def scheduler_answer(address: str | None, timeout: float = PROBE_TIMEOUT) -> str:
    """Whether a scheduler answers at ``address``, cheaply (no Dask handshake, so it never
    hangs): OPEN, REFUSED (nothing there: the scheduler is gone), SILENT (no answer within
    ``timeout``: a stopped process, a full backlog, a host out of reach or a name that
    does not resolve now) or UNKNOWN (inproc:// or gateway addresses).

    A Dask scheduler speaks first: it sends its handshake as soon as it accepts a tcp://
    connection, and a tls:// one answers a TLS hello. A stopped scheduler's kernel still
    accepts the TCP connection, so the greeting is what tells it apart; a Dask connect to
    it would wait for that greeting without a time limit.
    """
    if not address:
        return REFUSED
    try:
        scheme, host, port = split_address(address)
    except ValueError:
        return REFUSED
    if scheme not in ("tcp", "tls", "ws", "wss") or not host or not port:
        return UNKNOWN
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return REFUSED
    except OSError:
        return SILENT
    with sock:
        if scheme in ("ws", "wss"):
            return OPEN  # an HTTP server: it waits for the client to speak
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if scheme == "tls":
                return _tls_greeting(sock, host)
            return OPEN if sock.recv(1) else REFUSED  # closed without a word: no scheduler
        except TimeoutError:
            return SILENT
        except OSError:
            return REFUSED  # reset


def _tls_greeting(sock: socket.socket, host: str) -> str:
    """A TLS hello answered (even with a refusal) is a scheduler speaking."""
    import ssl  # ~10 ms: loaded by the first tls:// probe, not with %load_ext

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return OPEN
    except ssl.SSLError:
        return OPEN  # it answered, if only to refuse a client without certificates
