"""Property-based: whatever YAML (or non-YAML) a user writes, only ConfigError comes out."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipejupyter.config.loader import load_config
from pipejupyter.errors import ConfigError

KEYS = st.sampled_from(
    [
        "pipecluster",
        "pipeconfig",
        "casaconfig",
        "cluster_class",
        "cluster_kwargs",
        "adapt_kwargs",
        "profiles",
        "default",
        "env",
        "mpi",
        "workers",
        "backend",
        "dask",
        "clustertype",
        "n_workers",
        "jobqueue",
        "slurm",
        "local",
        "pass",
        "set",
        "sanitize",
        "scheduler",
        "host",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10), st.floats(allow_nan=False), st.text(max_size=8)
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(tmp_path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        cfg = load_config([path])
        for name in cfg.profile_names:
            cfg.resolve(name)
    except ConfigError as exc:
        assert str(exc)  # a message, never empty


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_only_raises_config_error(isolated, text):
    check(isolated, text)


@FUZZ
@given(tree=st.dictionaries(KEYS, TREES, max_size=4))
def test_random_structures_only_raise_config_error(isolated, tree):
    check(isolated, yaml.safe_dump(tree))


@FUZZ
@given(
    profile=st.dictionaries(
        st.sampled_from(
            [
                "backend",
                "workers",
                "cluster_kwargs",
                "adapt_kwargs",
                "env",
                "mpi",
                "cluster_class",
                "scheduler",
            ]
        ),
        TREES,
        max_size=4,
    )
)
def test_random_profiles_only_raise_config_error(isolated, profile):
    check(isolated, yaml.safe_dump({"pipecluster": {"profiles": {"p": profile}}}))
