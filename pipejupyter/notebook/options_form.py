"""The options form in a notebook: ``pipejupyter.options("slurm")``.

The fields are the core's (lifecycle/options.py): the same the sidebar's dialog shows. With
ipywidgets the form renders as inputs and a Start button; without, as text, and values are
set by key (``form["cluster_kwargs.cores"] = 4``). ``form.values`` are the chosen values;
``pipejupyter.start(profile, options=form)`` or ``form.start()`` starts with them, validated
like a config file: a bad value is refused before anything starts, shown next to its field.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from pipejupyter.errors import PipejupyterError
from pipejupyter.lifecycle import manager
from pipejupyter.notebook.text_views import text_table

GROUP_TITLES = {
    "size": "Size",
    "resources": "Resources",
    "placement": "Placement",
    "gateway options": "Gateway options",
}


class OptionsForm:
    """A profile's options, prefilled from the profile; see the module docstring."""

    def __init__(
        self,
        profile: str | None = None,
        *,
        config: Any = None,
        overrides: Any = None,
        name: str | None = None,
        wait: bool = True,
    ) -> None:
        self.schema = manager.profile_options(profile, config=config, overrides=overrides)
        self.profile: str = self.schema["profile"]
        self.fields: list[dict[str, Any]] = self.schema["fields"]
        self._config, self._overrides = config, overrides
        self._start_kwargs = {"name": name, "wait": wait}
        self._chosen: dict[str, Any] = {}
        self.handle: Any = None
        self._widget: Any = None
        self._inputs: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}
        self._status: Any = None

    # -- values -----------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """The values that differ from what the profile says (what start() applies)."""
        out = dict(self._chosen)
        for field in self.fields:
            widget = self._inputs.get(field["key"])
            if widget is None:
                continue
            value = _read(field, widget.value)
            if value != field["value"]:
                out[field["key"]] = value
            else:
                out.pop(field["key"], None)
        return out

    def __getitem__(self, key: str) -> Any:
        field = self._field(key)
        if key in self._chosen:
            return self._chosen[key]
        widget = self._inputs.get(key)
        return _read(field, widget.value) if widget is not None else field["value"]

    def __setitem__(self, key: str, value: Any) -> None:
        self._field(key)
        self._chosen[key] = value
        widget = self._inputs.get(key)
        if widget is not None:
            widget.value = _shown(self._field(key), value)

    def _field(self, key: str) -> dict[str, Any]:
        for field in self.fields:
            if field["key"] == key:
                return field
        raise KeyError(f"{key!r} is not an option of profile {self.profile!r}; options: "
                       f"{', '.join(f['key'] for f in self.fields)}")  # fmt: skip

    # -- starting ---------------------------------------------------------------------
    def start(self, **kwargs: Any):
        """Start the profile with the chosen values; the handle, as pipejupyter.start."""
        options = {**self._start_kwargs, **kwargs}
        self.handle = manager.start(
            self.profile,
            config=self._config,
            overrides=self._overrides,
            options=self.values,
            **options,
        )
        return self.handle

    def _on_start(self, _button: Any = None) -> None:
        for label in self._errors.values():
            label.value = ""
        self._status.value = "starting..."
        try:
            handle = self.start()
        except PipejupyterError as exc:
            key = getattr(exc, "key", None) or ""
            target = next((k for k in self._errors if key.endswith(k)), None)
            message = html.escape(str(exc))
            if target is not None:
                self._errors[target].value = f"<span style='color:#c62828'>{message}</span>"
                self._status.value = "not started: see the field above"
            else:
                self._status.value = f"<span style='color:#c62828'>{message}</span>"
            return
        self._status.value = html.escape(f"started {handle.name} ({handle.id})")

    # -- display ----------------------------------------------------------------------
    def widget(self) -> Any:
        """The ipywidgets form (built once)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self) -> Any:
        import ipywidgets as w

        rows: list[Any] = [w.HTML(f"<b>{html.escape(self.profile)}</b> "
                                  f"({html.escape(self.schema['backend'])})")]  # fmt: skip
        group = None
        for field in self.fields:
            if field["group"] != group:
                group = field["group"]
                rows.append(w.HTML(f"<i>{html.escape(GROUP_TITLES.get(group, group))}</i>"))
            widget = _input(w, field)
            self._inputs[field["key"]] = widget
            error = w.HTML("")
            self._errors[field["key"]] = error
            origin = field.get("origin") or "default"
            hint = w.HTML(
                f"<small>{html.escape(field.get('help') or '')} [{html.escape(origin)}]</small>"
            )
            rows.append(w.VBox([w.HBox([widget, hint]), error]))
        for warning in self.schema.get("warnings") or []:
            rows.append(w.HTML(f"<small>warning: {html.escape(warning)}</small>"))
        button = w.Button(description="Start", button_style="primary")
        button.on_click(self._on_start)
        self._status = w.HTML("")
        rows.append(w.HBox([button, self._status]))
        return w.VBox(rows)

    def __repr__(self) -> str:
        rows = [
            [f["key"], _describe_value(self[f["key"]]), _limits(f), f.get("origin") or ""]
            for f in self.fields
        ]
        head = f"options of profile {self.profile!r} ({self.schema['backend']})"
        return head + "\n" + text_table(["KEY", "VALUE", "ACCEPTS", "FROM"], rows)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        try:
            bundle = self.widget()._repr_mimebundle_(**kwargs)
        except ImportError:
            bundle = {}
        bundle = dict(bundle or {})
        bundle["text/plain"] = repr(self)
        return bundle


def options(profile: str | None = None, **kwargs: Any) -> OptionsForm:
    """The options form of ``profile`` (see :class:`OptionsForm`)."""
    return OptionsForm(profile, **kwargs)


# -- one field ------------------------------------------------------------------------


def _input(w: Any, field: Mapping[str, Any]) -> Any:
    kind, label = field["kind"], field["label"]
    value = _shown(field, field["value"])
    style = {"description_width": "10em"}
    if kind == "bool":
        return w.Checkbox(value=bool(field["value"]), description=label, style=style)
    if kind == "select":
        choices = [("(default)", "")] + [
            (f"{c} - {h}" if h else str(c), str(c))
            for c, h in zip(
                field["choices"] or [],
                field.get("choice_help") or [""] * len(field["choices"] or []),
                strict=False,
            )
        ]
        return w.Dropdown(options=choices, value=value, description=label, style=style)
    if kind == "list":
        return w.Textarea(value=value, description=label, style=style)
    return w.Text(value=value, description=label, style=style)


def _shown(field: Mapping[str, Any], value: Any) -> Any:
    if field["kind"] == "bool":
        return bool(value)
    if value is None:
        return ""
    if field["kind"] == "list" and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def _read(field: Mapping[str, Any], raw: Any) -> Any:
    """A widget's text as the field's type; text that does not parse is kept for the core's
    validation to refuse with the field's name."""
    kind = field["kind"]
    if kind == "bool":
        return bool(raw)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if kind == "list":
        return [line.strip() for line in str(raw).splitlines() if line.strip()]
    if kind in ("int", "number"):
        try:
            number = float(raw)
        except ValueError:
            return raw
        return int(number) if kind == "int" and number.is_integer() else number
    if kind == "select" and field.get("choices"):
        for choice in field["choices"]:
            if str(choice) == raw:
                return choice
    return raw


def _describe_value(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _limits(field: Mapping[str, Any]) -> str:
    if field.get("choices"):
        return " | ".join(str(c) for c in field["choices"])
    low, high = field.get("minimum"), field.get("maximum")
    if low is None and high is None:
        return field["kind"]
    unit = f" {field['unit']}" if field.get("unit") else ""
    return f"{field['kind']} {'' if low is None else low}..{'' if high is None else high}{unit}"
