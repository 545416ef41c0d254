"""Pure conversion from the agent's secrets to Envoy's ``tls.v3.Secret`` (xds-protos messages).

``default`` → ``tls_certificate{certificate_chain, private_key}`` (inline bytes; the chain is
every PEM the CA returned, concatenated, as Istio does); ``ROOTCA`` →
``validation_context{trusted_ca}``.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from meshsec.agent.secret import WorkloadSecret
from meshsec.core.pki import TrustBundle

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105


def build_tls_certificate_secret(name: str, secret: WorkloadSecret) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=secret.cert_chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=secret.key_pem),
        ),
    )


def build_validation_context_secret(name: str, roots: TrustBundle) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=roots.to_pem()),
        ),
    )


def build_discovery_response(
    secrets: Iterable[secret_pb2.Secret], *, version_info: str, nonce: str
) -> discovery_pb2.DiscoveryResponse:
    resources = []
    for item in secrets:
        packed = any_pb2.Any()
        packed.Pack(item)
        resources.append(packed)
    return discovery_pb2.DiscoveryResponse(
        version_info=version_info, resources=resources, type_url=SECRET_TYPE_URL, nonce=nonce
    )
