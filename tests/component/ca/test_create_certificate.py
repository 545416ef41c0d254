"""CreateCertificate against a real CA server on loopback (TLS), with real tokens and CSRs."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from meshsec.core.pki import TrustBundle, parse_certificates_pem
from meshsec.core.pki.verify import verify_svid
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import CaUnderTest, call, new_csr, token_for

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _san_uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


async def test_token_caller_gets_chain_for_its_service_account(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    _, csr = new_csr(SLEEP)
    result = await call(ca, csr, token=token_for(clusters.cluster1))
    assert result.code is OK
    # Self-signed CA: [leaf, root bundle]; every element ends with a newline.
    assert len(result.chain) == 2
    assert all(e.endswith("-----END CERTIFICATE-----\n") for e in result.chain)
    assert result.chain[1] == ca.root_pem.decode()
    leaf = result.leaf
    assert _san_uris(leaf) == [SLEEP]
    bundle = TrustBundle.parse_pem(result.chain[-1])
    assert str(verify_svid([leaf], bundle, now=datetime.now(UTC))) == SLEEP
    [record] = ca.issued()
    assert record.serial == f"{leaf.serial_number:032x}"
    assert (record.spiffe_id, record.authenticator, record.cluster) == (
        SLEEP,
        "KubeJWTAuthenticator",
        "cluster1",
    )
    assert record.not_after == leaf.not_valid_after_utc
    assert ca.counter("citadel_server_success_cert_issuance_count") == 1


async def test_csr_asking_for_another_identity_gets_the_callers_only(
    ca: CaUnderTest, clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    _, csr = new_csr("spiffe://cluster.local/ns/kube-system/sa/admin")
    with caplog.at_level(logging.INFO, logger="meshsec.ca.service"):
        result = await call(ca, csr, token=token_for(clusters.cluster1, "default", "sleep"))
    assert result.code is OK
    assert _san_uris(result.leaf) == [SLEEP]
    assert "kube-system/sa/admin; ignored" in caplog.text
    assert [r.spiffe_id for r in ca.issued()] == [SLEEP]


async def test_remote_cluster_token_with_its_cluster_id(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    _, csr = new_csr()
    token = token_for(clusters.cluster2, "bookinfo", "reviews")
    result = await call(ca, csr, token=token, cluster_id="cluster2")
    assert result.code is OK
    assert _san_uris(result.leaf) == ["spiffe://cluster.local/ns/bookinfo/sa/reviews"]
    assert ca.issued()[0].cluster == "cluster2"


async def test_explicit_local_cluster_id_is_accepted(ca: CaUnderTest, clusters: Clusters) -> None:
    _, csr = new_csr()
    result = await call(ca, csr, token=token_for(clusters.cluster1), cluster_id="cluster1")
    assert result.code is OK


@pytest.mark.parametrize(
    ("ttl_seconds", "expected"),
    [
        pytest.param(0, timedelta(hours=24), id="zero-means-default-24h"),
        pytest.param(-5, timedelta(hours=24), id="negative-means-default"),
        pytest.param(3600, timedelta(hours=1), id="one-hour"),
        pytest.param(90 * 86400, timedelta(days=90), id="exactly-max"),
    ],
)
async def test_ttl_rules(
    ca: CaUnderTest, clusters: Clusters, ttl_seconds: int, expected: timedelta
) -> None:
    _, csr = new_csr()
    before = datetime.now(UTC).replace(microsecond=0)
    result = await call(ca, csr, token=token_for(clusters.cluster1), ttl_seconds=ttl_seconds)
    after = datetime.now(UTC)
    assert result.code is OK
    not_after = result.leaf.not_valid_after_utc
    assert before + expected <= not_after <= after + expected
    assert result.leaf.not_valid_before_utc <= before - timedelta(minutes=2) + timedelta(seconds=1)


# ------------------------------------------------------------------ hostile / broken requests


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged_payload(c: Clusters) -> str:
    """A valid token whose payload is swapped for kube-system/admin, signature kept."""
    header, _payload, signature = token_for(c.cluster1).split(".")
    claims = jwt.decode(token_for(c.cluster1), options={"verify_signature": False})
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    return f"{header}.{_b64(claims)}.{signature}"


def _custom(c: Clusters, **changes: object) -> str:
    claims = jwt.decode(token_for(c.cluster1), options={"verify_signature": False})
    claims.update(changes)
    s = c.cluster1
    return jwt.encode(claims, s.private_key, algorithm=s.algorithm, headers={"kid": s.kid})


def _alg_none(c: Clusters) -> str:
    claims = jwt.decode(token_for(c.cluster1), options={"verify_signature": False})
    return f"{_b64({'alg': 'none', 'kid': c.cluster1.kid})}.{_b64(claims)}."


def _tampered_csr() -> str:
    _, pem = new_csr()
    csr = x509.load_pem_x509_csr(pem.encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value: still parses, no longer verifies
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _rsa1024_csr() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SLEEP)]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Hostile:
    token: Callable[[Clusters], str | None]
    code: grpc.StatusCode
    csr: Callable[[], str] = lambda: new_csr()[1]
    cluster_id: str | None = None
    ttl_seconds: int = 0
    metadata: dict[str, str] | None = None
    details: str | None = None
    log: str | None = None


def _ok_token(c: Clusters) -> str:
    return token_for(c.cluster1)


HOSTILE = {
    "no-token": Hostile(lambda c: None, UNAUTHENTICATED, details="request authenticate failure"),
    "malformed-token": Hostile(lambda c: "not-a-jwt", UNAUTHENTICATED),
    "empty-bearer": Hostile(lambda c: "", UNAUTHENTICATED),
    "bad-signature": Hostile(_forged_payload, UNAUTHENTICATED),
    "alg-none": Hostile(_alg_none, UNAUTHENTICATED),
    "expired": Hostile(
        lambda c: token_for(c.cluster1, now=datetime.now(UTC) - timedelta(hours=3)),
        UNAUTHENTICATED,
    ),
    "not-yet-valid": Hostile(
        lambda c: token_for(c.cluster1, now=datetime.now(UTC) + timedelta(hours=1)),
        UNAUTHENTICATED,
    ),
    "wrong-audience": Hostile(
        lambda c: token_for(c.cluster1, audiences=("kubernetes",)), UNAUTHENTICATED
    ),
    "not-a-service-account": Hostile(lambda c: _custom(c, sub="alice"), UNAUTHENTICATED),
    "service-account-without-namespace": Hostile(
        lambda c: _custom(c, sub="system:serviceaccount::sleep"), UNAUTHENTICATED
    ),
    "wrong-issuer-right-key": Hostile(
        lambda c: _custom(c, iss="https://evil.example"), UNAUTHENTICATED
    ),
    "untrusted-issuer": Hostile(lambda c: token_for(c.rogue), UNAUTHENTICATED),
    "unknown-cluster-id": Hostile(_ok_token, UNAUTHENTICATED, cluster_id="cluster9"),
    "cluster2-token-as-cluster1": Hostile(
        lambda c: token_for(c.cluster2), UNAUTHENTICATED, cluster_id="cluster1"
    ),
    "cluster2-token-without-cluster-id": Hostile(lambda c: token_for(c.cluster2), UNAUTHENTICATED),
    "garbage-csr": Hostile(_ok_token, INVALID_ARGUMENT, csr=lambda: "hello, CA"),
    "csr-bad-signature": Hostile(_ok_token, INVALID_ARGUMENT, csr=_tampered_csr),
    "rsa-1024-key": Hostile(_ok_token, INVALID_ARGUMENT, csr=_rsa1024_csr),
    "ttl-above-max": Hostile(_ok_token, INVALID_ARGUMENT, ttl_seconds=90 * 86400 + 1),
    "ttl-beyond-timedelta": Hostile(
        _ok_token, INVALID_ARGUMENT, ttl_seconds=2**62, log="TTL_ERROR", details=None
    ),
    "exp-huge-integer": Hostile(lambda c: _custom(c, exp=10**400), UNAUTHENTICATED),
    "exp-infinite": Hostile(lambda c: _custom(c, exp=float("inf")), UNAUTHENTICATED),
    "exp-nan": Hostile(lambda c: _custom(c, exp=float("nan")), UNAUTHENTICATED),
    "nbf-huge-integer": Hostile(lambda c: _custom(c, nbf=-(10**400)), UNAUTHENTICATED),
    "exp-beyond-year-9999": Hostile(lambda c: _custom(c, exp=2**53), UNAUTHENTICATED),
    "oversized-csr": Hostile(
        _ok_token,
        INVALID_ARGUMENT,
        csr=lambda: "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 20000,
    ),
    "oversized-request": Hostile(
        _ok_token,
        INVALID_ARGUMENT,
        csr=lambda: "x" * 100_000,
        log="bytes exceeds the limit of 65536 bytes (MESHSEC_CA_MAX_REQUEST_BYTES)",
    ),
    "absurd-request": Hostile(_ok_token, RESOURCE_EXHAUSTED, csr=lambda: "x" * 2_000_000),
    "impersonation": Hostile(
        _ok_token,
        UNAUTHENTICATED,
        metadata={"ImpersonatedIdentity": "spiffe://cluster.local/ns/kube-system/sa/admin"},
        details="request impersonation authentication failure",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_request_is_refused_and_nothing_is_issued(
    ca: CaUnderTest, clusters: Clusters, case: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    token = case.token(clusters)
    with caplog.at_level(logging.DEBUG):
        result = await call(
            ca,
            case.csr(),
            token=token,
            cluster_id=case.cluster_id,
            ttl_seconds=case.ttl_seconds,
            metadata=case.metadata,
        )
    assert result.code is case.code, result.details
    assert result.chain == []
    if case.details is not None:
        assert result.details == case.details
    if case.code is UNAUTHENTICATED:
        assert result.details.startswith("request ")  # opaque: no reason leaks to the caller
    assert ca.issued() == []
    assert ca.counter("citadel_server_success_cert_issuance_count") == 0
    if case.log is not None:
        assert case.log in caplog.text
    if token and len(token) > 40:
        assert token not in caplog.text  # tokens never reach the log


async def test_unknown_cluster_is_named_in_the_log(
    ca: CaUnderTest, clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    _, csr = new_csr()
    with caplog.at_level(logging.WARNING, logger="meshsec.ca.service"):
        result = await call(ca, csr, token=token_for(clusters.cluster1), cluster_id="cluster9")
    assert result.code is UNAUTHENTICATED
    # The caller learns which of its own claims failed, nothing about the CA's clusters.
    assert result.details == "request authenticate failure (unknown cluster 'cluster9')"
    assert (
        'client claims to be in cluster "cluster9", but we only know about local cluster '
        '"cluster1" and remote clusters [cluster2]' in caplog.text
    )
    assert ca.counter("citadel_server_authentication_failure_count") == 1


async def test_sign_errors_are_counted_by_label(ca: CaUnderTest, clusters: Clusters) -> None:
    token = token_for(clusters.cluster1)
    assert (await call(ca, "garbage", token=token)).code is INVALID_ARGUMENT
    too_long = 91 * 86400
    assert (await call(ca, new_csr()[1], token=token, ttl_seconds=too_long)).code is (
        INVALID_ARGUMENT
    )
    assert ca.counter("citadel_server_csr_sign_err_count:CSR_ERROR") == 1
    assert ca.counter("citadel_server_csr_sign_err_count:TTL_ERROR") == 1
    assert ca.counter("citadel_server_csr_count") == 2


# ------------------------------------------------------------------ client-certificate renewal


async def test_renewal_with_a_mesh_certificate_and_no_token(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    key, csr = new_csr()
    first = await call(ca, csr, token=token_for(clusters.cluster1, "default", "sleep"))
    assert first.code is OK
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain_pem = "".join(first.chain[:-1]).encode()
    _, csr2 = new_csr("spiffe://cluster.local/ns/kube-system/sa/admin")
    renewed = await call(ca, csr2, token=None, client_cert=(key_pem, chain_pem))
    assert renewed.code is OK, renewed.details
    assert _san_uris(renewed.leaf) == [SLEEP]
    assert renewed.leaf.serial_number != first.leaf.serial_number
    assert [r.authenticator for r in ca.issued()] == [
        "KubeJWTAuthenticator",
        "ClientCertAuthenticator",
    ]


async def test_client_certificate_from_another_ca_is_refused_at_the_handshake(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    from tests.testca import TestCA

    foreign = TestCA().issue_svid(SLEEP)
    _, csr = new_csr()
    result = await call(
        ca, csr, token=None, client_cert=(foreign.private_key_pem(), foreign.cert_chain_pem())
    )
    assert result.code is grpc.StatusCode.UNAVAILABLE
    assert ca.issued() == []


async def test_token_callers_on_the_client_certificate_port_still_need_a_certificate(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    channel_result = await call(ca, new_csr()[1], token=token_for(clusters.cluster1))
    assert channel_result.code is OK  # the main port serves token callers
    # The main port never asks for a client certificate, so a certificate-only caller there
    # is refused (no token, no certificate seen).
    _key, csr = new_csr()
    refused = await call(ca, csr, token=None)
    assert refused.code is UNAUTHENTICATED


def test_chain_elements_parse_back() -> None:
    """Sanity of the PEM helper the tests rely on (each element is exactly one certificate)."""
    from tests.testca import TestCA

    chain = TestCA().intermediate().sign_csr(new_csr()[1], SLEEP)
    assert [len(parse_certificates_pem(e)) for e in chain[:-1]] == [1, 1]


async def test_unexpected_failure_is_internal_unknown_counted_and_logged_with_traceback(
    ca: CaUnderTest,
    clusters: Clusters,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meshsec.ca.authority import CertificateAuthority

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("python-internal detail")

    monkeypatch.setattr(CertificateAuthority, "sign", broken)
    with caplog.at_level(logging.WARNING, logger="meshsec.ca.service"):
        result = await call(ca, new_csr()[1], token=token_for(clusters.cluster1))
    assert result.code is grpc.StatusCode.INTERNAL
    assert result.details == "CSR signing error (UNKNOWN)"  # no Python text for the caller
    assert ca.counter("citadel_server_csr_sign_err_count:UNKNOWN") == 1
    assert "Traceback" in caplog.text
    assert "python-internal detail" in caplog.text
    assert ca.issued() == []


async def test_ignored_csr_uris_are_logged_five_at_most(
    ca: CaUnderTest, clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    uris = [f"spiffe://cluster.local/ns/n{i}/sa/s" for i in range(40)]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with caplog.at_level(logging.INFO, logger="meshsec.ca.service"):
        result = await call(ca, csr, token=token_for(clusters.cluster1))
    assert result.code is OK
    [line] = [r.getMessage() for r in caplog.records if "; ignored" in r.getMessage()]
    assert "ns/n4/sa/s and 35 more; ignored" in line
    assert "ns/n5/" not in line


def _csr_with_cn(common_name: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


async def test_csr_with_subject_cn_gets_dual_use_cn_of_the_callers_id(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    """Istio's dual-use rule: CN = the first SAN (the caller's SPIFFE ID, not the CSR's CN)."""
    from cryptography.x509.oid import NameOID

    result = await call(ca, _csr_with_cn("admin.kube-system"), token=token_for(clusters.cluster1))
    assert result.code is OK, result.details
    cns = result.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cns] == [SLEEP]
    assert _san_uris(result.leaf) == [SLEEP]
    plain = await call(ca, new_csr()[1], token=token_for(clusters.cluster1))
    assert len(plain.leaf.subject) == 0  # no CN asked: the SPIFFE default, an empty subject


async def test_dual_use_cn_longer_than_64_is_refused(ca: CaUnderTest, clusters: Clusters) -> None:
    long_sa = "a" * 40  # spiffe://cluster.local/ns/default/sa/<40> = 77 characters
    token = token_for(clusters.cluster1, "default", long_sa)
    refused = await call(ca, _csr_with_cn("x"), token=token)
    assert refused.code is grpc.StatusCode.INTERNAL
    assert refused.details == "CSR signing error (CERT_GEN_ERROR)"
    assert ca.counter("citadel_server_csr_sign_err_count:CERT_GEN_ERROR") == 1
    assert (await call(ca, new_csr()[1], token=token)).code is OK  # without a CN it is fine
