"""Istio remote secrets (``istioctl create-remote-secret``) as the CA reads them (pure).

A remote secret is a ``v1`` ``Secret`` labelled ``istio/multiCluster: "true"`` whose every data key
is a cluster id and whose value is a kubeconfig for that cluster's API server
(``stringData`` as text, or ``data`` base64-encoded, ``stringData`` winning as in Kubernetes).

:func:`parse_remote_secret` checks everything it can without the network and returns every
cluster of the secret, or raises :class:`RemoteSecretError` naming the file and what is wrong: a
secret is used whole or not at all. Each kubeconfig must have a current context that resolves to
a cluster with an ``https`` server and inline ``certificate-authority-data``, and to a user with
an inline credential (``token``, or client certificate and key data). Refused: ``insecure-skip-
tls-verify`` (a man in the middle could then answer every TokenReview with ``authenticated:
true``), and — as istiod's ``sanitizeKubeConfig`` does — fields that make the CA read its own
files or run programs (``tokenFile``, ``client-certificate``, ``client-key``,
``certificate-authority``, ``exec``, ``auth-provider``).

:func:`compose_remote_clusters` applies Istio's registration rules across secrets: a key equal to
the local cluster id is ignored with a warning; a cluster id must be unique across secrets (the
secret that registered it first keeps it, a later one is refused whole).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshsec.ca.errors import CaError

MULTICLUSTER_LABEL = "istio/multiCluster"
CLUSTER_ANNOTATION = "networking.istio.io/cluster"
MAX_SECRET_BYTES = 1024 * 1024
_FILE_FIELDS_CLUSTER = ("certificate-authority",)
_UNSAFE_FIELDS_USER = ("tokenFile", "client-certificate", "client-key", "exec", "auth-provider")
_CLUSTER_ID = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,62}")


class RemoteSecretError(CaError):
    """A remote secret cannot be used; names the file and the problem."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"remote secret {source}: {reason}")


@dataclass(frozen=True)
class RemoteKubeconfig:
    """One cluster of a remote secret: its id and the kubeconfig (as parsed YAML)."""

    cluster_id: str
    config: Mapping[str, Any] = field(repr=False, compare=False)
    server: str
    sha256: str  # of the kubeconfig text: an unchanged kubeconfig is not reloaded


@dataclass(frozen=True)
class RemoteSecret:
    source: str
    name: str
    namespace: str
    clusters: tuple[RemoteKubeconfig, ...]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _one_line(exc: Exception) -> str:
    """A YAML error as one line WITHOUT PyYAML's source snippet: a remote secret holds a bearer
    token, and the snippet would copy part of it into the log. Only the problem and where."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        # PyYAML quotes what it found ("found undefined alias 'x'"): that may be token text too
        problem = _QUOTED.sub("'…'", " ".join(" ".join(parts).split()))
        return (problem or "malformed YAML")[:200] + where
    if isinstance(exc, yaml.YAMLError):
        return type(exc).__name__
    return " ".join(str(exc).split())[:300]


def _named(items: object, kind: str, name: str, source: str, key: str) -> dict[str, Any]:
    if not isinstance(items, list):
        raise RemoteSecretError(source, f"{key}: kubeconfig '{kind}' must be a list")
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(kind[:-1])
            if not isinstance(body, dict):
                raise RemoteSecretError(source, f"{key}: {kind[:-1]} {name!r} has no body")
            return body
    raise RemoteSecretError(source, f"{key}: kubeconfig has no {kind[:-1]} named {name!r}")


def parse_kubeconfig(text: str, *, source: str, key: str) -> RemoteKubeconfig:
    """Validate one data value of a remote secret as a usable kubeconfig."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RemoteSecretError(
            source, f"{key}: kubeconfig is not valid YAML: {_one_line(exc)}"
        ) from None
    except RecursionError:  # PyYAML's composer recurses per nesting level
        raise RemoteSecretError(source, f"{key}: kubeconfig is nested too deeply") from None
    if not isinstance(config, dict):
        raise RemoteSecretError(source, f"{key}: kubeconfig must be a mapping")
    if config.get("kind", "Config") != "Config":
        raise RemoteSecretError(source, f"{key}: kubeconfig kind must be Config")
    current = config.get("current-context")
    if not isinstance(current, str) or not current:
        raise RemoteSecretError(source, f"{key}: kubeconfig has no current-context")
    context = _named(config.get("contexts"), "contexts", current, source, key)
    cluster = _named(config.get("clusters"), "clusters", str(context.get("cluster")), source, key)
    user = _named(config.get("users"), "users", str(context.get("user")), source, key)
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise RemoteSecretError(
            source, f"{key}: cluster server {str(server)[:200]!r} must be an https:// URL"
        )
    if cluster.get("insecure-skip-tls-verify"):
        raise RemoteSecretError(
            source,
            f"{key}: insecure-skip-tls-verify is refused (TokenReview answers would be "
            "unauthenticated)",
        )
    # Like istiod's sanitizeKubeConfig: whoever can write a remote secret must not make the CA
    # read its own files (tokenFile, certificate paths) or run programs (exec, auth-provider).
    for where, body, fields in (
        ("cluster", cluster, _FILE_FIELDS_CLUSTER),
        ("user", user, _UNSAFE_FIELDS_USER),
    ):
        for name in fields:
            if body.get(name):
                raise RemoteSecretError(
                    source, f"{key}: {where} field {name!r} is not allowed in a remote secret"
                )
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data:
        raise RemoteSecretError(
            source, f"{key}: the cluster has no certificate-authority-data to verify the server"
        )
    try:
        ca_pem = base64.b64decode(str(ca_data), validate=True)
    except (binascii.Error, ValueError):
        raise RemoteSecretError(
            source, f"{key}: certificate-authority-data is not base64"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise RemoteSecretError(
            source, f"{key}: certificate-authority-data holds no PEM certificate"
        )
    has_token = isinstance(user.get("token"), str) and bool(user["token"])
    has_cert = bool(user.get("client-certificate-data")) and bool(user.get("client-key-data"))
    if not (has_token or has_cert):
        raise RemoteSecretError(
            source, f"{key}: the user has no credentials (token or client-certificate-data)"
        )
    digest = hashlib.sha256(text.encode()).hexdigest()
    return RemoteKubeconfig(key, config, server, digest)


def parse_remote_secret(text: str, *, source: str) -> RemoteSecret:
    """A remote secret document -> its clusters (all or nothing)."""
    if len(text.encode()) > MAX_SECRET_BYTES:
        raise RemoteSecretError(source, f"larger than {MAX_SECRET_BYTES} bytes")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RemoteSecretError(source, f"not valid YAML: {_one_line(exc)}") from None
    except RecursionError:  # PyYAML's composer recurses per nesting level
        raise RemoteSecretError(source, "not valid YAML: nested too deeply") from None
    if len(docs) != 1:
        raise RemoteSecretError(source, f"must hold exactly one Secret, found {len(docs)}")
    doc = docs[0]
    if not isinstance(doc, dict):
        raise RemoteSecretError(source, "top level must be a mapping")
    if doc.get("apiVersion") != "v1" or doc.get("kind") != "Secret":
        raise RemoteSecretError(
            source,
            f"not a v1 Secret (apiVersion {str(doc.get('apiVersion'))[:50]!r}, "
            f"kind {str(doc.get('kind'))[:50]!r})",
        )
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise RemoteSecretError(source, "metadata.name is missing")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or labels.get(MULTICLUSTER_LABEL) != "true":
        raise RemoteSecretError(
            source, f'not a remote secret: label {MULTICLUSTER_LABEL} is not "true"'
        )
    values: dict[str, str] = {}
    data = doc.get("data") or {}
    string_data = doc.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise RemoteSecretError(source, "data and stringData must be mappings")
    for key, value in data.items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, ValueError):
            raise RemoteSecretError(source, f"data.{key}: not base64-encoded UTF-8") from None
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise RemoteSecretError(source, f"stringData.{key}: must be a string")
        values[str(key)] = value
    if not values:
        raise RemoteSecretError(source, "holds no cluster (data / stringData is empty)")
    clusters: list[RemoteKubeconfig] = []
    for key, value in sorted(values.items()):
        if not _CLUSTER_ID.fullmatch(key):
            raise RemoteSecretError(source, f"data key {key[:100]!r} is not a valid cluster id")
        clusters.append(parse_kubeconfig(value, source=source, key=key))
    namespace = meta.get("namespace")
    return RemoteSecret(
        source, meta["name"], namespace if isinstance(namespace, str) else "", tuple(clusters)
    )


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`compose_remote_clusters`."""

    clusters: dict[str, tuple[str, RemoteKubeconfig]]  # cluster id -> (source, kubeconfig)
    refused: dict[str, str]  # source -> reason (the whole secret)
    warnings: tuple[str, ...]


def compose_remote_clusters(
    secrets: Sequence[RemoteSecret],
    *,
    local_cluster: str,
    reserved: frozenset[str] = frozenset(),
    previous_owner: Mapping[str, str] | None = None,
) -> Registration:
    """Which secret provides which cluster (Istio's rules; see the module docstring).

    ``reserved`` are cluster ids configured otherwise (``--cluster`` directories). Secrets that
    registered a cluster before (``previous_owner``: cluster id -> source) keep it; among new
    ones, the first by source name wins.
    """
    previous_owner = previous_owner or {}
    owned: dict[str, tuple[str, RemoteKubeconfig]] = {}
    refused: dict[str, str] = {}
    warnings: list[str] = []

    def priority(secret: RemoteSecret) -> tuple[int, str]:
        holds = any(previous_owner.get(c.cluster_id) == secret.source for c in secret.clusters)
        return (0 if holds else 1, secret.source)

    for secret in sorted(secrets, key=priority):
        wanted: list[RemoteKubeconfig] = []
        problem: str | None = None
        for cluster in secret.clusters:
            if cluster.cluster_id == local_cluster:
                warnings.append(
                    f"remote secret {secret.source}: ignoring cluster {cluster.cluster_id!r} as "
                    "it would overwrite the config cluster"
                )
                continue
            if cluster.cluster_id in reserved:
                problem = f"cluster {cluster.cluster_id!r} is already configured (--cluster)"
            elif cluster.cluster_id in owned:
                problem = (
                    f"cluster {cluster.cluster_id!r} has already been registered by remote "
                    f"secret {owned[cluster.cluster_id][0]}"
                )
            if problem:
                break
            wanted.append(cluster)
        if problem:
            refused[secret.source] = problem
            continue
        for cluster in wanted:
            owned[cluster.cluster_id] = (secret.source, cluster)
    return Registration(owned, refused, tuple(warnings))
