"""Remote secrets as the CA reads them, and Istio's registration rules across secrets."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from meshsec.ca.remote_secret import (
    RemoteSecret,
    RemoteSecretError,
    compose_remote_clusters,
    parse_remote_secret,
)
from meshsec.cluster.kubeconfig import build_kubeconfig, render_remote_secret, render_yaml

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(name: str = "cluster2", **cluster_changes: Any) -> dict[str, Any]:
    config = build_kubeconfig(name, server="https://127.0.0.1:6443", ca_pem=CA_PEM, token="t")
    config["clusters"][0]["cluster"].update(cluster_changes)
    return config


def secret_text(name: str = "cluster2") -> str:
    return render_remote_secret(name, kubeconfig(name))


def mutate(text: str, edit: Any) -> str:
    doc = yaml.safe_load(text)
    edit(doc)
    return yaml.safe_dump(doc)


def test_create_remote_secret_output_parses() -> None:
    secret = parse_remote_secret(secret_text(), source="cluster2.yaml")
    assert (secret.name, secret.namespace) == ("istio-remote-secret-cluster2", "istio-system")
    [cluster] = secret.clusters
    assert cluster.cluster_id == "cluster2"
    assert cluster.server == "https://127.0.0.1:6443"


def test_data_base64_form_is_accepted_and_stringdata_wins() -> None:
    def to_data(doc: dict[str, Any]) -> None:
        value = doc["stringData"].pop("cluster2")
        doc["data"] = {
            "cluster2": base64.b64encode(value.encode()).decode(),
            "cluster9": base64.b64encode(render_yaml(kubeconfig("cluster9")).encode()).decode(),
        }

    secret = parse_remote_secret(mutate(secret_text(), to_data), source="s")
    assert [c.cluster_id for c in secret.clusters] == ["cluster2", "cluster9"]


def _set(path: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return edit


def _kube(edit: Any) -> Any:
    def outer(doc: dict[str, Any]) -> None:
        config = yaml.safe_load(doc["stringData"]["cluster2"])
        edit(config)
        doc["stringData"]["cluster2"] = yaml.safe_dump(config)

    return outer


MALFORMED = {
    "not-yaml": (lambda t: "a: [", "not valid YAML"),
    "two-documents": (lambda t: t + "---\n" + t, "exactly one Secret"),
    "not-a-secret": (lambda t: mutate(t, _set("kind", "ConfigMap")), "not a v1 Secret"),
    "wrong-label": (
        lambda t: mutate(t, _set("metadata/labels", {"istio/multiCluster": "false"})),
        "label istio/multiCluster",
    ),
    "no-label": (
        lambda t: mutate(t, _set("metadata/labels", KeyError)),
        "label istio/multiCluster",
    ),
    "no-name": (lambda t: mutate(t, _set("metadata/name", KeyError)), "metadata.name"),
    "empty-data": (lambda t: mutate(t, _set("stringData", {})), "holds no cluster"),
    "bad-base64": (lambda t: mutate(t, _set("data", {"c": "!!!"})), "not base64"),
    "bad-cluster-id": (
        lambda t: mutate(t, _set("stringData", {"bad id": "x"})),
        "not a valid cluster id",
    ),
    "kubeconfig-not-yaml": (
        lambda t: mutate(t, _set("stringData/cluster2", "a: [")),
        "kubeconfig is not valid YAML",
    ),
    "kubeconfig-not-mapping": (
        lambda t: mutate(t, _set("stringData/cluster2", "- 1")),
        "must be a mapping",
    ),
    "no-current-context": (
        lambda t: mutate(t, _kube(_set("current-context", KeyError))),
        "no current-context",
    ),
    "context-missing": (
        lambda t: mutate(t, _kube(_set("current-context", "nope"))),
        "no context named 'nope'",
    ),
    "cluster-missing": (lambda t: mutate(t, _kube(_set("clusters", []))), "no cluster named"),
    "user-missing": (lambda t: mutate(t, _kube(_set("users", []))), "no user named"),
    "http-server": (
        lambda t: mutate(t, _kube(_set("clusters/0/cluster/server", "http://x"))),
        "https:// URL",
    ),
    "insecure-skip-verify": (
        lambda t: mutate(t, _kube(_set("clusters/0/cluster/insecure-skip-tls-verify", True))),
        "insecure-skip-tls-verify",
    ),
    "no-ca": (
        lambda t: mutate(t, _kube(_set("clusters/0/cluster/certificate-authority-data", KeyError))),
        "no certificate-authority-data",
    ),
    "ca-not-pem": (
        lambda t: mutate(
            t, _kube(_set("clusters/0/cluster/certificate-authority-data", "aGVsbG8="))
        ),
        "no PEM certificate",
    ),
    "no-credentials": (
        lambda t: mutate(t, _kube(_set("users/0/user", {"username": "u"}))),
        "no credentials",
    ),
    "token-file": (
        lambda t: mutate(t, _kube(_set("users/0/user", {"tokenFile": "/etc/shadow"}))),
        "'tokenFile' is not allowed",
    ),
    "exec-plugin": (
        lambda t: mutate(t, _kube(_set("users/0/user", {"token": "t", "exec": {"command": "sh"}}))),
        "'exec' is not allowed",
    ),
    "auth-provider": (
        lambda t: mutate(t, _kube(_set("users/0/user", {"auth-provider": {"name": "gcp"}}))),
        "'auth-provider' is not allowed",
    ),
    "client-key-path": (
        lambda t: mutate(
            t, _kube(_set("users/0/user", {"client-certificate": "/a", "client-key": "/b"}))
        ),
        "'client-certificate' is not allowed",
    ),
    "ca-file-path": (
        lambda t: mutate(
            t, _kube(_set("clusters/0/cluster/certificate-authority", "/etc/ssl/ca.pem"))
        ),
        "'certificate-authority' is not allowed",
    ),
    "too-large": (lambda t: t + "#" * (1 << 20), "larger than"),
}


@pytest.mark.parametrize("case", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_secrets_are_refused_whole_with_the_reason(case: tuple[Any, str]) -> None:
    make, message = case
    with pytest.raises(RemoteSecretError, match=message) as info:
        parse_remote_secret(make(secret_text()), source="bad.yaml")
    assert "remote secret bad.yaml" in str(info.value)


def test_one_bad_kubeconfig_refuses_the_whole_secret() -> None:
    def add_bad(doc: dict[str, Any]) -> None:
        doc["stringData"]["cluster3"] = "apiVersion: v1\nkind: Config\n"

    with pytest.raises(RemoteSecretError, match="cluster3"):
        parse_remote_secret(mutate(secret_text(), add_bad), source="s")


# ------------------------------------------------------------------ registration rules


def secret(source: str, *clusters: str) -> RemoteSecret:
    doc = yaml.safe_load(secret_text(clusters[0]))
    doc["stringData"] = {c: render_yaml(kubeconfig(c)) for c in clusters}
    return parse_remote_secret(yaml.safe_dump(doc), source=source)


def test_local_cluster_key_is_ignored_with_a_warning() -> None:
    result = compose_remote_clusters(
        [secret("a", "cluster1", "cluster2")], local_cluster="cluster1"
    )
    assert list(result.clusters) == ["cluster2"]
    assert "it would overwrite the config cluster" in result.warnings[0]


def test_cluster_ids_are_unique_across_secrets_first_source_wins() -> None:
    result = compose_remote_clusters(
        [secret("b.yaml", "cluster2"), secret("a.yaml", "cluster2", "cluster3")],
        local_cluster="cluster1",
    )
    assert {cid: src for cid, (src, _) in result.clusters.items()} == {
        "cluster2": "a.yaml",
        "cluster3": "a.yaml",
    }
    assert "already been registered by remote secret a.yaml" in result.refused["b.yaml"]


def test_the_previous_owner_keeps_its_cluster() -> None:
    result = compose_remote_clusters(
        [secret("b.yaml", "cluster2"), secret("a.yaml", "cluster2", "cluster3")],
        local_cluster="cluster1",
        previous_owner={"cluster2": "b.yaml"},
    )
    assert result.clusters["cluster2"][0] == "b.yaml"
    assert "a.yaml" in result.refused
    assert "cluster3" not in result.clusters


def test_cluster_configured_elsewhere_is_refused() -> None:
    result = compose_remote_clusters(
        [secret("a", "cluster2")], local_cluster="cluster1", reserved=frozenset({"cluster2"})
    )
    assert result.clusters == {}
    assert "already configured" in result.refused["a"]


LEAKY_TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQtZm9yLXRlc3Rz.SIGNATUREsig123"


def _broken_secrets() -> dict[str, str]:
    good_kubeconfig = render_yaml(
        build_kubeconfig("cluster2", server="https://127.0.0.1:6443", ca_pem=CA_PEM, token="t")
    )
    inner = good_kubeconfig.replace("token: t", f"token: {LEAKY_TOKEN}: {LEAKY_TOKEN}")
    outer = render_remote_secret("cluster2", yaml.safe_load(good_kubeconfig))
    return {
        # the token line of the kubeconfig inside the Secret is malformed YAML
        "inner-kubeconfig": mutate(outer, lambda d: d["stringData"].update(cluster2=inner)),
        # the Secret itself is malformed on a line holding the token
        "outer-secret": outer + f"  broken: {LEAKY_TOKEN}: {LEAKY_TOKEN}\n",
        # an "alias" made of token text: PyYAML would quote it back
        "alias": f"stringData: *{LEAKY_TOKEN}\n",
    }


@pytest.mark.parametrize("name", list(_broken_secrets()))
def test_a_malformed_secret_never_puts_token_text_in_the_error(name: str) -> None:
    with pytest.raises(RemoteSecretError) as info:
        parse_remote_secret(_broken_secrets()[name], source="cluster2.yaml")
    message = str(info.value)
    assert "not valid YAML" in message
    leaked = [
        LEAKY_TOKEN[i : i + 8]
        for i in range(len(LEAKY_TOKEN) - 8)
        if LEAKY_TOKEN[i : i + 8] in message
    ]
    assert not leaked, message
