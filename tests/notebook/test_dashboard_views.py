"""The widget's and %pipecluster dashboard's links under a Jupyter server's proxy."""

from __future__ import annotations

import html
import json
import re

from pipejupyter.environment.dashboard_links import ServerProxy, browser_model
from pipejupyter.notebook import html_views

HUB = ServerProxy("/user/alice/", ("localhost", "127.0.0.1"))
MODEL = {
    "id": "0123456789ab",
    "name": "c1",
    "backend": "slurm",
    "status": "running",
    "scheduler_address": "tcp://127.0.0.1:4000",
    "dashboard_link": "http://127.0.0.1:4001/status",
    "workers": 1,
}


def test_a_proxied_path_is_a_link_with_the_launch_button_dask_uses():
    shown = html_views.header_html(browser_model(MODEL, HUB), launch_button=True)
    assert 'href="/user/alice/proxy/4001/status"' in shown
    (button,) = re.findall(r"<button[^>]*>", shown)
    assert 'data-commandlinker-command="dask:populate-and-launch-layout"' in button
    args = re.search(r'data-commandlinker-args="([^"]*)"', button).group(1)
    assert json.loads(html.unescape(args)) == {"url": "/user/alice/proxy/4001/status"}
    # Outside JupyterLab no button; the direct link as before.
    plain = html_views.header_html(browser_model(MODEL, None))
    assert "<button" not in plain
    assert 'href="http://127.0.0.1:4001/status"' in plain


def test_a_dashboard_the_proxy_does_not_allow_shows_the_setting_and_no_button():
    far = browser_model({**MODEL, "dashboard_link": "http://node7:4001/status"}, HUB)
    shown = html_views.header_html(far, launch_button=True)
    assert "<button" not in shown
    assert "c.ServerProxy.host_allowlist" in shown
    bundle = html_views.dashboard_bundle("c1", far, launch_button=True)
    assert "c.ServerProxy.host_allowlist" in bundle["text/plain"]


def test_only_plain_paths_and_http_links_are_clickable():
    assert html_views.safe_link("/user/a/proxy/1/status") == "/user/a/proxy/1/status"
    for bad in ("//evil.example/x", "/x\\y", '/x"onclick', "/a b", "javascript:x", "/x\n"):
        assert html_views.safe_link(bad) is None, bad
        model = {**MODEL, "dashboard_link": bad}
        assert "<a href" not in html_views.header_html(model, launch_button=True)
        assert "<button" not in html_views.header_html(model, launch_button=True)
