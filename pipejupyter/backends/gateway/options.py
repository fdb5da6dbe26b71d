"""Profile ``options:`` checked against a gateway server's own option spec.

The server publishes its options (``GET /api/v1/options``) as typed fields with bounds;
dask-gateway's ``Options`` object validates a value when it is set. We set every value
before anything is created, so a typo or an out-of-range value is one ConfigError that
says what this server accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipejupyter.errors import ConfigError, did_you_mean

#: names of a Mapping option that receives worker environment variables
ENVIRONMENT_OPTION_NAMES = ("environment", "env")


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def describe_field(field: Any, default: Any = None) -> str:
    """``worker_cores (integer 1..2, default 1)``: one option as a user reads it."""
    kind = type(field).__name__.lower()
    text = {
        "integer": "integer",
        "float": "number",
        "string": "string",
        "bool": "true/false",
        "mapping": "mapping",
    }.get(kind, kind)
    low, high = getattr(field, "min", None), getattr(field, "max", None)
    if low is not None or high is not None:
        text += (
            f" {_number(low) if low is not None else '-inf'}"
            f"..{_number(high) if high is not None else 'inf'}"
        )
    if kind == "select":
        text = "one of " + " | ".join(field.options)
    if kind != "mapping" and default is not None:
        text += f", default {default!r}"
    return f"{field.field} ({text})"


def describe_options(options: Any, defaults: Mapping[str, Any] | None = None) -> str:
    defaults = defaults or {}
    fields = list(options._fields.values())
    if not fields:
        return "none (this gateway takes no cluster options)"
    return "; ".join(describe_field(f, defaults.get(f.field)) for f in fields)


def environment_option(options: Any) -> str | None:
    """The server's environment-like option: a Mapping named environment/env, if any."""
    from dask_gateway.options import Mapping as MappingField

    for name, field in options._fields.items():
        if isinstance(field, MappingField) and name.lower() in ENVIRONMENT_OPTION_NAMES:
            return name
    return None


def fill_options(
    options: Any,
    wanted: Mapping[str, Any],
    environment: Mapping[str, str],
    *,
    address: str,
    key: str,
    source_of: Callable[[str], str | None] = lambda name: None,
) -> tuple[dict[str, Any], list[str]]:
    """Set ``wanted`` and ``environment`` on the server's ``options``.

    Returns ``(plain dict to submit, warnings)``. Raises ConfigError naming what the
    server accepts for an unknown option or a value it refuses.
    """
    defaults = {name: field.value for name, field in options._fields.items()}
    for name, value in wanted.items():
        if name not in options._fields:
            raise ConfigError(
                f"the gateway at {address} has no cluster option {name!r}",
                key=f"{key}.{name}",
                source=source_of(name),
                accepted=describe_options(options, defaults),
                suggestion=did_you_mean(name, options._fields),
            )
        field = options._fields[name]
        try:
            options[name] = value
        except (ValueError, TypeError) as exc:
            # A mapping may hold secrets: name its type, never its content.
            shown = (
                type(value).__name__
                if isinstance(value, Mapping) or type(field).__name__ == "Mapping"
                else repr(value)
            )
            reason = str(exc)
            if isinstance(exc, ValueError) and (
                getattr(field, "min", None) is not None or getattr(field, "max", None) is not None
            ):
                reason = "out of range"  # dask-gateway's own text prints bounds as 2.000000
            raise ConfigError(
                f"the gateway at {address} refuses {shown} ({reason})",
                key=f"{key}.{name}",
                source=source_of(name),
                accepted=describe_field(field, defaults[name]),
            ) from None
    warnings: list[str] = []
    env_name = environment_option(options)
    if env_name is not None:
        # Variables named in the profile's own options win over the passed-through ones.
        merged = {
            **environment,
            **{str(k): str(v) for k, v in dict(options[env_name] or {}).items()},
        }
        options[env_name] = merged
    elif environment:
        warnings.append(
            f"the gateway at {address} has no environment option (its options: "
            f"{', '.join(options._fields) or 'none'}), "
            "so these variables do not reach its workers: "
            f"{', '.join(sorted(environment))}"
        )
    return dict(options), warnings
