"""A corpus of malformed configs in every format: one clear error each, nothing started.

Each file's first line says ``# expect: LINE FRAGMENT`` (LINE 0: no line number expected).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pipejupyter
from pipejupyter.errors import ConfigError
from tests.support.common import run_cli

CORPUS = sorted((Path(__file__).resolve().parents[1] / "data" / "bad_configs").glob("*.yaml"))
pytestmark = pytest.mark.usefixtures("isolated")


def _expectation(path: Path) -> tuple[int, str]:
    match = re.match(r"# expect: (\d+) (.+)", path.read_text().splitlines()[0])
    assert match, f"{path.name} lacks its '# expect:' line"
    return int(match[1]), match[2].strip()


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_each_bad_config_gives_one_located_error_and_starts_nothing(path):
    line, fragment = _expectation(path)
    with pytest.raises(ConfigError) as info:
        pipejupyter.start(config=path, wait=False)
    message = str(info.value)
    assert fragment in message
    if line:
        assert f"{path}:{line}" in message
    assert pipejupyter.clusters() == []


@pytest.mark.parametrize("path", CORPUS[:6], ids=lambda p: p.stem)
def test_cli_reports_the_same_error_with_status_2(path):
    _, fragment = _expectation(path)
    out = run_cli("config", "-f", str(path))
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr


def test_corpus_covers_every_format():
    names = {p.stem.split("_")[0] for p in CORPUS}
    assert {"native", "casa", "single", "syntax", "labextension"} <= names
