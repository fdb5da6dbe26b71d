"""StageProgress (the ipywidget) and its text fallback, fed the way a stage feeds them."""

from __future__ import annotations

import io

import pytest

from pipejupyter.notebook.stage_progress import (
    StageProgress,
    TextProgress,
    make_reporter,
    progress_text,
)
from pipejupyter.stages.results import ItemFailure, StageResult


def counts(**kw):
    base = {
        "done": 0,
        "failed": 0,
        "running": 0,
        "skipped": 0,
        "retried": 0,
        "total": 10,
        "elapsed": 0.0,
        "eta": None,
    }
    return {**base, **kw}


def test_progress_line():
    assert progress_text("flag", counts(done=4, failed=1, running=2, elapsed=3.25, eta=4.0)) == (
        "stage 'flag': 4/10 done, 1 failed, 2 running - elapsed 3.2 s, ETA 4.0 s"
    )
    assert progress_text("flag", counts(done=3, skipped=7, elapsed=75)) == (
        "stage 'flag': 10/10 done, 7 skipped - elapsed 1 min 15 s"
    )
    assert "ETA 2 h 00 min" in progress_text("x", counts(done=1, elapsed=1.0, eta=7200.0))


def test_text_fallback_tags_output_and_tracebacks():
    out, err = io.StringIO(), io.StringIO()
    rep = TextProgress(out=out, err=err, interval=0)
    rep.start("flag", 3, 1, "auto")
    rep.output("a.ms", "line one\nline two\n", "stdout")
    rep.output("b.ms", "oops\n", "stderr")
    rep.failure("c.ms", "Traceback (most recent call last):\nValueError: bad\n", 1, False)
    rep.update(counts(done=1, total=3, skipped=1, running=1, elapsed=1.0, eta=1.0))
    rep.finish(
        StageResult(
            [1, 2, ItemFailure("c.ms", "ValueError: bad")],
            ["a.ms", "b.ms", "c.ms"],
            stage="flag",
            failed={"c.ms": ItemFailure("c.ms", "ValueError: bad")},
            stats={"done": 1, "skipped": 1, "failed": 1, "elapsed": 2.0},
        )
    )
    text = out.getvalue()
    assert text.splitlines()[0] == "stage 'flag': 3 item(s), 1 already done (skipped)"
    assert "[a.ms] line one\n[a.ms] line two\n" in text
    assert "stage 'flag': 2/3 done, 1 running, 1 skipped - elapsed 1.0 s, ETA 1.0 s" in text
    assert text.rstrip().endswith("stage 'flag': 1 done, 1 skipped, 1 failed, 2.00 s")
    assert "[b.ms] oops\n" in err.getvalue()
    assert (
        "[c.ms] failed (attempt 1), retrying:\n"
        "[c.ms] Traceback (most recent call last):\n"
        "[c.ms] ValueError: bad\n" in err.getvalue()
    )


def test_widget_shows_counts_and_outcome(capsys):
    pytest.importorskip("ipywidgets")
    rep = StageProgress()
    rep.start("image", 4, 1, "auto")
    assert (rep.bar.value, rep.bar.max) == (1, 4)
    rep.update(counts(done=2, failed=1, skipped=1, total=4, running=0, elapsed=2.0))
    rep._render()
    assert rep.bar.value == 4
    assert rep.bar.bar_style == "warning"
    assert "stage &#x27;image&#x27;: 3/4 done, 1 failed" in rep.label.value  # escaped HTML
    rep.finish(
        StageResult(
            [1, 2, 3, ItemFailure("d", "E: x")],
            list("abcd"),
            stage="image",
            failed={"d": ItemFailure("d", "E: x")},
            stats={"done": 2, "skipped": 1, "failed": 1},
        )
    )
    assert rep.bar.bar_style == "danger"


def test_outside_a_kernel_the_text_reporter_is_chosen():
    assert type(make_reporter("auto")) is TextProgress
    assert type(make_reporter("text")) is TextProgress
