"""Kubernetes backend: a DaskCluster resource through the dask-kubernetes operator (KubeCluster).

Profile keys (besides the common ones)::

    backend: kubernetes
    image: ghcr.io/dask/dask:2026.8.0           # scheduler and worker image
    namespace: science                           # default: the kubeconfig's namespace
    resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "1", memory: 2Gi}}
    cluster_name: my-pipeline                    # default: pipejupyter-<profile>-<random>
    api_timeout: 10                              # seconds to wait for the Kubernetes API

The resource is built by dask-kubernetes' own ``make_cluster_spec``, so ``dry_run()`` shows
exactly what would be created. Its ``env`` is the profile's worker environment, MPI launch
variables removed, as filtered for remote workers (see environment/remote.py).
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from typing import Any

import yaml

from pipejupyter.backends.base import ClusterClassBackend
from pipejupyter.backends.form_fields import RESOURCES
from pipejupyter.config.schema import Field
from pipejupyter.environment.mpi import mpi_sanitized
from pipejupyter.environment.redaction import REDACTED, is_secret, redact_urls
from pipejupyter.environment.remote import remote_environment
from pipejupyter.errors import ClusterError, ConfigError
from pipejupyter.models import ClusterSpec, OptionField

DEFAULT_API_TIMEOUT = 10.0
# A DaskCluster name becomes part of pod and service names: RFC 1123, short.
VALID_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# KubeCluster keyword arguments that are profile keys here.
PROFILE_KWARGS = {
    "image": "image",
    "namespace": "namespace",
    "resources": "resources",
    "name": "cluster_name",
}


class KubernetesBackend(ClusterClassBackend):
    name = "kubernetes"
    extra = "kubernetes"
    security_note = "set TLS up in the pod specs (dask-kubernetes), not in the profile"
    requires = ("dask_kubernetes",)
    cluster_classes = (
        "dask_kubernetes.operator.KubeCluster",
        "dask_kubernetes.operator.kubecluster.KubeCluster",
    )
    profile_keys = {
        "image": Field(
            "str",
            "container image of scheduler and workers (default: dask config kubernetes.image)",
            nullable=True,
        ),
        "namespace": Field("str", "namespace (default: the kubeconfig's)", nullable=True),
        "resources": Field(
            "record",
            "resources of each scheduler and worker container",
            nullable=True,
            children={
                "requests": Field("str-map", "e.g. {cpu: '1', memory: 2Gi}", nullable=True),
                "limits": Field("str-map", "e.g. {cpu: '1', memory: 2Gi}", nullable=True),
            },
        ),
        "cluster_name": Field("str", "name of the DaskCluster resource", nullable=True),
        "api_timeout": Field(
            "number", "seconds to wait for the Kubernetes API", minimum=0, nullable=True
        ),
    }

    # -- resolve time -------------------------------------------------------------------
    @classmethod
    def option_fields(cls, spec: ClusterSpec) -> list[OptionField]:
        """Workers/adapt, the image, and each container's requests and limits."""
        opts = spec.options
        resources = opts.get("resources") or {}
        fields = [
            *super().option_fields(spec),
            OptionField(key="image", label="Image", kind="str", value=opts.get("image"),
                        origin=spec.origin_of("image"), group=RESOURCES, nullable=True,
                        help="container image of scheduler and workers"),
        ]  # fmt: skip
        for kind in ("requests", "limits"):
            for name, unit in (("cpu", "CPUs"), ("memory", "bytes, e.g. 2Gi")):
                key = f"resources.{kind}.{name}"
                fields.append(
                    OptionField(
                        key=key,
                        label=f"{name.upper() if name == 'cpu' else name.title()} {kind}",
                        kind="str",
                        value=(resources.get(kind) or {}).get(name),
                        origin=spec.origin_of(key),
                        group=RESOURCES,
                        nullable=True,
                        help=f"each container's {name} {kind} ({unit})",
                    )
                )
        return fields

    @classmethod
    def translate(cls, spec: ClusterSpec) -> None:
        # cluster_class: KubeCluster files put image/namespace/resources in cluster_kwargs.
        kwargs = spec.cluster_kwargs
        for key, option in PROFILE_KWARGS.items():
            if key in kwargs:
                spec.options.setdefault(option, kwargs.pop(key))
                spec.notes.append(f"cluster_kwargs.{key} is the kubernetes profile key {option}")
        if "n_workers" in kwargs:
            value = kwargs.pop("n_workers")
            if spec.origin.get("workers") != "argument":
                spec.workers = value
            spec.notes.append(f"cluster_kwargs.n_workers={value!r} is the worker count (workers)")
        if isinstance(kwargs.get("env"), dict):
            values = kwargs.pop("env")
            spec.env = {
                **spec.env,
                "set": {
                    **(spec.env.get("set") or {}),
                    **{str(k): str(v) for k, v in values.items()},
                },
            }
            spec.env.setdefault("pass", [])
            spec.notes.append("cluster_kwargs.env joins the worker environment (env.set)")

    @classmethod
    def validate_kwargs(cls, spec: ClusterSpec) -> None:
        super().validate_kwargs(spec)
        for key in ("custom_cluster_spec", "env"):
            if key in spec.cluster_kwargs:
                raise ConfigError(
                    f"{key} is built by pipejupyter from the profile (image, resources, env)",
                    key=f"profiles.{spec.profile}.cluster_kwargs.{key}",
                    source=spec.origin_of(f"cluster_kwargs.{key}"),
                )
        name = spec.options.get("cluster_name")
        if name is not None and not VALID_NAME.match(name):
            raise ConfigError(
                f"{name!r} cannot name a DaskCluster",
                key=f"profiles.{spec.profile}.cluster_name",
                source=spec.origin_of("cluster_name"),
                accepted=(
                    "lower-case letters, digits and '-', "
                    "starting and ending with a letter or digit, at most 40 characters"
                ),
            )

    # -- the resource -------------------------------------------------------------------
    def __init__(self, spec: ClusterSpec, env) -> None:
        super().__init__(spec, env)
        self.cluster_name = (
            spec.options.get("cluster_name")
            or f"pipejupyter-{_slug(spec.profile)}-{uuid.uuid4().hex[:6]}"
        )

    def environment(self) -> tuple[dict[str, str], list[str]]:
        return remote_environment(self.env, self.spec.env.get("pass") or (), "kubernetes")

    def initial_workers(self) -> int:
        if self.spec.adapt_kwargs:
            return int(self.spec.adapt_kwargs.get("minimum", 0) or 0)
        return int(self.spec.workers or 0)

    def cluster_spec(self) -> dict[str, Any]:
        """The DaskCluster resource, from dask-kubernetes' own spec builder."""
        import dask
        from dask_kubernetes.operator import make_cluster_spec

        opts = self.spec.options
        send, _ = self.environment()
        resources = {k: v for k, v in (opts.get("resources") or {}).items() if v}
        return make_cluster_spec(
            name=self.cluster_name,
            image=opts.get("image") or dask.config.get("kubernetes.image"),
            n_workers=self.initial_workers(),
            resources=resources or None,
            env=send or None,
        )

    def dry_run(self) -> str:
        _, notes = self.environment()
        shown = redact_urls(_redact_resource(self.cluster_spec(), self.env.redact))
        text = super().dry_run()
        text += "# DaskCluster resource (dask_kubernetes.operator.make_cluster_spec):\n"
        text += yaml.dump(shown, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)
        text += "".join(f"# note: {n}\n" for n in notes)
        return text

    # -- live ---------------------------------------------------------------------------
    def start(self) -> None:
        klass = self.cluster_type(self.spec)
        timeout = float(self.spec.options.get("api_timeout") or DEFAULT_API_TIMEOUT)
        namespace = check_api(timeout, self.spec.options.get("namespace"))
        kwargs = dict(self.spec.cluster_kwargs)
        kwargs.update(
            custom_cluster_spec=self.cluster_spec(),
            namespace=namespace,
            quiet=True,
            shutdown_on_close=True,
        )
        kwargs.setdefault("resource_timeout", max(int(timeout), 1))
        with mpi_sanitized(self.spec.mpi):
            self.cluster = klass(**kwargs)


class _PlainDumper(yaml.SafeDumper):
    """Repeated parts (scheduler and worker share ``resources``) written out, not as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:20].strip("-") or "cluster"


def _redact_resource(resource: dict[str, Any], extra: tuple[str, ...]) -> dict[str, Any]:
    """The resource as shown: values of secret-named variables replaced."""
    import copy

    shown = copy.deepcopy(resource)
    for part in ("worker", "scheduler"):
        for container in shown["spec"][part]["spec"]["containers"]:
            for item in container.get("env") or []:
                if is_secret(item["name"], extra) and item.get("value"):
                    item["value"] = REDACTED
    return shown


def check_api(timeout: float, namespace: str | None) -> str:
    """The namespace to use, once the Kubernetes API has answered; ClusterError within ``timeout``.

    KubeCluster would otherwise wait on an unreachable API for minutes. The probe runs in a
    thread with its own event loop, so it also works inside a running kernel's loop.
    """
    outcome: dict[str, Any] = {}

    async def probe() -> None:
        import kr8s.asyncio

        api = await kr8s.asyncio.api()
        await api.version()
        outcome["namespace"] = namespace or api.namespace or "default"

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(probe(), timeout))
        except BaseException as exc:  # reported to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="pipejupyter-kubernetes-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2)
    hint = (
        "KubeCluster needs a kubeconfig (KUBECONFIG or ~/.kube/config) "
        "or an in-cluster service account"
    )
    if thread.is_alive() or isinstance(outcome.get("error"), (asyncio.TimeoutError, TimeoutError)):
        raise ClusterError(f"the Kubernetes API did not answer within {timeout:g} s; {hint}")
    error = outcome.get("error")
    if error is not None:
        raise ClusterError(f"no Kubernetes API reachable ({type(error).__name__}: {error}); {hint}")
    return outcome["namespace"]
