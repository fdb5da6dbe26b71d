"""The options form, defined once: what a user may choose when starting a profile.

:func:`profile_options` describes a profile's fields (name, type, current value and where
it came from, limits or choices, unit, help), prefilled from the resolved profile; the
sidebar's dialog, the notebook's ipywidgets form and the REST schema route all show exactly
this. :func:`option_overrides` turns the values a user chose into overrides (what ``--set``
does), so they are validated by the same code as config files and refused before anything
starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipejupyter.backend_registry import get_backend
from pipejupyter.config.loader import Config
from pipejupyter.errors import ConfigError

#: keys that size a cluster: a worker count and an adapt range exclude each other
WORKERS = "workers"
ADAPT_MINIMUM = "adapt_kwargs.minimum"
ADAPT_MAXIMUM = "adapt_kwargs.maximum"
#: the most values one form may carry (a REST body is input)
MAX_OPTION_VALUES = 200


def describe_options(cfg: Config, profile: str | None = None) -> dict[str, Any]:
    """The options form of ``profile``: ``{profile, backend, description, fields, warnings}``.

    Raises ConfigError when the profile does not resolve; a backend that must ask its
    scheduler or service (SLURM partitions, a gateway's option spec) asks it briefly.
    """
    spec = cfg.resolve(profile)
    fields = get_backend(spec.backend).option_fields(spec)
    return {
        "profile": spec.profile,
        "backend": spec.backend,
        "description": spec.description,
        "fields": [f.to_json() for f in fields],
        "warnings": list(spec.warnings),
    }


def option_values(options: Any) -> Mapping[str, Any]:
    """The chosen values of a form object (anything with a ``values`` mapping) or a mapping."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return options
    values = getattr(options, "values", None)
    if isinstance(values, Mapping):
        return values
    raise ConfigError(
        f"options must be a mapping of option keys to values or an options form, got "
        f"{type(options).__name__}",
        source="argument",
        key="options",
    )


def option_overrides(options: Any) -> dict[str, Any]:
    """Chosen values as overrides relative to the profile (``{"cluster_kwargs.cores": 4}``).

    An empty value (None or "") keeps what the profile says. A worker count replaces the
    profile's adaptivity and an adapt range replaces its count; giving both is an error.
    """
    values = option_values(options)
    if len(values) > MAX_OPTION_VALUES:
        raise ConfigError(
            f"{len(values)} option values; a form carries at most {MAX_OPTION_VALUES}",
            source="argument",
            key="options",
        )
    chosen = {str(k): v for k, v in values.items() if v is not None and v != ""}
    out: dict[str, Any] = {}
    adapt = [k for k in (ADAPT_MINIMUM, ADAPT_MAXIMUM) if k in chosen]
    if WORKERS in chosen and adapt:
        raise ConfigError(
            "give either a worker count or an adapt range, not both",
            source="argument",
            key=WORKERS,
            accepted="workers, or adapt_kwargs.minimum and adapt_kwargs.maximum",
        )
    if WORKERS in chosen:
        out[WORKERS] = chosen.pop(WORKERS)
        out["adapt_kwargs"] = None
    elif adapt:
        out[WORKERS] = None
    for key, value in chosen.items():
        if isinstance(value, str) and key.endswith("job_extra_directives"):
            value = [line.strip() for line in value.splitlines() if line.strip()]
        out[key] = value
    return out
