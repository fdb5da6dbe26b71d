"""Fields of the options form that several backends share (see Backend.option_fields).

A field's key is the override a chosen value becomes (``--set`` relative to the profile), so
the form is validated by the same code as a config file; its value and origin come from
the resolved spec, so the form opens prefilled with what the profile says and says where.
"""

from __future__ import annotations

from typing import Any

from pipejupyter.models import ClusterSpec, OptionField

SIZE = "size"
RESOURCES = "resources"
PLACEMENT = "placement"


def field_for(spec: ClusterSpec, key: str, label: str, kind: str, **more: Any) -> OptionField:
    """A field whose value is the spec's value at ``key`` (dotted), with its origin."""
    value: Any = spec
    for part in key.split("."):
        if isinstance(value, ClusterSpec):
            value = getattr(value, part, None)
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = None
            break
    return OptionField(key=key, label=label, kind=kind, value=value, origin=spec.origin_of(key),
                       **more)  # fmt: skip


#: the three sizing fields: key, label, help
_SIZING = (
    ("workers", "Workers", "how many workers to start (leave empty to adapt instead)"),
    ("adapt_kwargs.minimum", "Adapt minimum", "adaptive scaling: the fewest workers kept"),
    ("adapt_kwargs.maximum", "Adapt maximum", "adaptive scaling: the most workers asked for"),
)


def sizing_fields(spec: ClusterSpec, max_workers: int | None, unit: str = "workers") -> list:
    """Workers, or adapt minimum and maximum: every profile has these three."""
    adapt = spec.adapt_kwargs or {}
    values = {
        "workers": None if adapt else spec.workers,
        "adapt_kwargs.minimum": adapt.get("minimum"),
        "adapt_kwargs.maximum": adapt.get("maximum"),
    }
    return [
        OptionField(key=key, label=label, kind="int", value=values[key],
                    origin=spec.origin_of(key), help=help_text, unit=unit, nullable=True,
                    group=SIZE, minimum=0, maximum=max_workers)
        for key, label, help_text in _SIZING
    ]  # fmt: skip
