"""Small pure pieces of the runtime and sidecar: child environments, declared-port authz."""

from __future__ import annotations

from meshsec.config.sources.files import FileContent, build_snapshot
from meshsec.mesh.launch import build_child_env
from meshsec.proxy.authz import PeerInfo
from meshsec.proxy.policy import LivePolicy, PolicyView
from meshsec.proxy.registry import PortBinding, Registry, WorkloadEntry


def test_child_env_drops_mesh_and_proxy_settings_and_adds_extra() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "CA_ADDR": "evil:1",
        "FILE_MOUNTED_CERTS": "true",
        "MESHSEC_LOG_LEVEL": "debug",
        "ISTIO_META_CLUSTER_ID": "other",
        "HTTP_PROXY": "http://corp:3128",
        "https_proxy": "http://corp:3128",
        "PORT": "1",
    }
    env = build_child_env(parent, {"PORT": "8080"})
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "PORT": "8080"}


POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-8080, namespace: ns1}
spec:
  selector: {matchLabels: {app: a}}
  rules:
  - to:
    - operation: {ports: ["8080"]}
"""


def test_authorization_sees_the_declared_port_not_the_loopback_app_port() -> None:
    snapshot = build_snapshot([FileContent("p.yaml", POLICY.encode())])
    binding = PortBinding(8080, 43123, 43124, "tcp")
    entry = WorkloadEntry("a", "ns1", "sa", {"app": "a"}, (binding,))
    policy = LivePolicy(PolicyView(snapshot, Registry((entry,)), entry))
    peer = PeerInfo("127.0.0.1", "spiffe://cluster.local/ns/x/sa/y")
    # the inbound listener reports the application's port; the rule names the declared one
    assert policy.authorize(peer, 43123, None).allowed
    assert not policy.authorize(peer, 9999, None).allowed
