"""CA material: the persisted self-signed root and plugged-in cacerts checks (each problem)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshsec.ca.authority import CertificateAuthority
from meshsec.ca.material import (
    load_or_create_self_signed,
    load_plugged_in_material,
    load_published_root,
    publish_root_bundle,
)
from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki import (
    CaMaterialError,
    encode_certificates_pem,
    parse_certificates_pem,
    parse_csr,
)
from tests.component.ca.support import new_csr
from tests.testca import TestCA

TD = TrustDomain("cluster.local")
NOW = datetime.now(UTC)
SLEEP = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")


def test_self_signed_root_is_created_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create_self_signed(tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=10))
    second = load_or_create_self_signed(
        tmp_path, trust_domain=TD, now=NOW + timedelta(days=1), ttl=timedelta(days=10)
    )
    assert first.root_bundle_pem == second.root_bundle_pem
    assert (tmp_path / "self-signed" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    root = first.root_bundle.certificates[0]
    assert root.subject.rfc4514_string() == "O=cluster.local"
    assert first.chain_pems == ()
    publish_root_bundle(tmp_path, first)
    assert load_published_root(tmp_path) == first.root_bundle_pem


def test_self_signed_rsa_root_uses_the_configured_size(tmp_path: Path) -> None:
    material = load_or_create_self_signed(
        tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=1), key_type="rsa", rsa_bits=2048
    )
    assert material.issuer.private_key.key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize("missing", ["ca-cert.pem", "ca-key.pem", "root-cert.pem"])
def test_half_present_self_signed_material_is_refused_not_replaced(
    tmp_path: Path, missing: str
) -> None:
    load_or_create_self_signed(tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=1))
    before = {p.name: p.read_bytes() for p in (tmp_path / "self-signed").iterdir()}
    (tmp_path / "self-signed" / missing).unlink()
    with pytest.raises(CaMaterialError) as err:
        load_or_create_self_signed(tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=1))
    assert err.value.path.endswith(missing)
    assert "refusing to mint a new root" in str(err.value)
    after = {p.name: p.read_bytes() for p in (tmp_path / "self-signed").iterdir()}
    assert after == {k: v for k, v in before.items() if k != missing}


def test_world_readable_self_signed_key_is_refused(tmp_path: Path) -> None:
    load_or_create_self_signed(tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=1))
    (tmp_path / "self-signed" / "ca-key.pem").chmod(0o644)
    with pytest.raises(CaMaterialError, match="0600"):
        load_or_create_self_signed(tmp_path, trust_domain=TD, now=NOW, ttl=timedelta(days=1))


def test_published_root_missing_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(CaMaterialError, match="meshsec ca serve"):
        load_published_root(tmp_path)


# ------------------------------------------------------------------ plugged-in cacerts


@pytest.fixture(scope="module")
def root_ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def cluster1_ca(root_ca: TestCA) -> TestCA:
    return root_ca.intermediate("cluster1")


def test_plugged_in_chain_follows_istio_response_layout(
    tmp_path: Path, root_ca: TestCA, cluster1_ca: TestCA
) -> None:
    directory = cluster1_ca.write_cacerts(tmp_path / "cacerts")
    material = load_plugged_in_material(directory, now=NOW)
    authority = CertificateAuthority(
        material, default_ttl=timedelta(hours=24), max_ttl=timedelta(days=90)
    )
    issued = authority.sign(parse_csr(new_csr()[1]), SLEEP, requested_seconds=0, now=NOW)
    chain = issued.cert_chain
    # [leaf, ca-cert, root (from cert-chain.pem), root-cert.pem bundle]: istio-contracts §1.5
    assert len(chain) == 4
    assert [parse_certificates_pem(e)[0] for e in chain[:3]][1:] == [
        cluster1_ca.cert,
        root_ca.root_cert,
    ]
    assert all(e.endswith("-----END CERTIFICATE-----\n") for e in chain[:3])
    assert chain[3] == (directory / "root-cert.pem").read_text()
    assert material.chain_not_after == cluster1_ca.cert.not_valid_after_utc


def test_leaf_not_after_is_clamped_to_the_signer(tmp_path: Path, root_ca: TestCA) -> None:
    short = root_ca.intermediate("short", ttl=timedelta(hours=2))
    material = load_plugged_in_material(short.write_cacerts(tmp_path / "c"), now=NOW)
    authority = CertificateAuthority(
        material, default_ttl=timedelta(hours=24), max_ttl=timedelta(days=90)
    )
    issued = authority.sign(parse_csr(new_csr()[1]), SLEEP, requested_seconds=36000, now=NOW)
    assert issued.certificate.not_valid_after_utc == short.cert.not_valid_after_utc


def _remove(name: str) -> Callable[[Path, TestCA], None]:
    def apply(d: Path, other: TestCA) -> None:
        (d / name).unlink()

    return apply


def _replace(name: str, content: Callable[[TestCA], bytes]) -> Callable[[Path, TestCA], None]:
    def apply(d: Path, other: TestCA) -> None:
        (d / name).write_bytes(content(other))

    return apply


def _root_as_ca_keeping_the_old_chain(d: Path, other: TestCA) -> None:
    """ca-cert.pem is another mesh's root (with its key and root-cert.pem); cert-chain.pem is
    still this mesh's chain, unrelated to it."""
    (d / "ca-cert.pem").write_bytes(other.root_pem)
    (d / "ca-key.pem").write_bytes(other.key_pem)
    (d / "root-cert.pem").write_bytes(other.root_pem)


def _chain_reversed(d: Path, other: TestCA) -> None:
    certs = parse_certificates_pem((d / "cert-chain.pem").read_bytes())
    (d / "cert-chain.pem").write_bytes(encode_certificates_pem(certs[::-1]))


def _chain_with_a_stranger_above_the_root(d: Path, other: TestCA) -> None:
    """ca-cert, its root, then a foreign root that issued neither."""
    ca_cert = parse_certificates_pem((d / "ca-cert.pem").read_bytes())
    root = parse_certificates_pem((d / "root-cert.pem").read_bytes())
    stranger = parse_certificates_pem(other.root_pem)
    (d / "cert-chain.pem").write_bytes(encode_certificates_pem([*ca_cert, *root, *stranger]))


PROBLEMS: dict[str, tuple[Callable[[Path, TestCA], None], str, str]] = {
    "missing-ca-cert": (_remove("ca-cert.pem"), "ca-cert.pem", "incomplete signing CA bundle"),
    "missing-ca-key": (_remove("ca-key.pem"), "ca-key.pem", "incomplete signing CA bundle"),
    "missing-cert-chain": (
        _remove("cert-chain.pem"),
        "cert-chain.pem",
        "incomplete signing CA bundle",
    ),
    "missing-root-cert": (
        _remove("root-cert.pem"),
        "root-cert.pem",
        "incomplete signing CA bundle",
    ),
    "garbage-ca-cert": (_replace("ca-cert.pem", lambda o: b"junk\n"), "ca-cert.pem", "not a valid"),
    "garbage-key": (_replace("ca-key.pem", lambda o: b"junk\n"), "ca-key.pem", "not a valid"),
    "key-of-another-ca": (
        _replace("ca-key.pem", lambda o: o.key_pem),
        "ca-key.pem",
        "does not match",
    ),
    "root-of-another-mesh": (
        _replace("root-cert.pem", lambda o: o.root_pem),
        "cert-chain.pem",
        "does not verify against root-cert.pem",
    ),
    "chain-of-another-ca": (
        _replace("cert-chain.pem", lambda o: o.intermediate("elsewhere").cert_chain_pem),
        "cert-chain.pem",
        "is not ca-cert.pem",
    ),
    "ca-cert-is-the-root-with-an-unrelated-chain": (
        _root_as_ca_keeping_the_old_chain,
        "cert-chain.pem",
        "is not ca-cert.pem",
    ),
    "chain-out-of-order": (
        _chain_reversed,
        "cert-chain.pem",
        "is not ca-cert.pem",
    ),
    "chain-link-broken": (
        _chain_with_a_stranger_above_the_root,
        "cert-chain.pem",
        "certificate 2 ",
    ),
    "signing-cert-not-a-ca": (
        _replace(
            "ca-cert.pem",
            lambda o: o.issue_svid("spiffe://cluster.local/ns/a/sa/b").cert_chain_pem(),
        ),
        "ca-cert.pem",
        "not authorized to sign other certificates",
    ),
}


@pytest.mark.parametrize("case", list(PROBLEMS.values()), ids=list(PROBLEMS))
def test_bad_cacerts_refuse_to_load_naming_file_and_problem(
    tmp_path: Path,
    cluster1_ca: TestCA,
    case: tuple[Callable[[Path, TestCA], None], str, str],
) -> None:
    damage, file_name, problem = case
    directory = cluster1_ca.write_cacerts(tmp_path / "cacerts")
    damage(directory, TestCA("other.mesh"))
    with pytest.raises(CaMaterialError) as err:
        load_plugged_in_material(directory, now=NOW)
    assert Path(err.value.path).name == file_name, str(err.value)
    assert problem in str(err.value)


def test_expired_plugged_in_ca_is_refused(tmp_path: Path) -> None:
    old = TestCA(now=NOW - timedelta(days=30)).intermediate("old", ttl=timedelta(days=1))
    directory = old.write_cacerts(tmp_path / "cacerts")
    with pytest.raises(CaMaterialError, match="cert chain has expired"):
        load_plugged_in_material(directory, now=NOW)


def test_missing_cacerts_directory(tmp_path: Path) -> None:
    with pytest.raises(CaMaterialError, match="does not exist"):
        load_plugged_in_material(tmp_path / "nope", now=NOW)


def test_multi_certificate_chain_is_split_one_per_element(tmp_path: Path, root_ca: TestCA) -> None:
    """Istio's "multi-cert chain" case: every certificate of cert-chain.pem is its own element."""
    regional = root_ca.intermediate("region", path_length=1)
    cluster = regional.intermediate("cluster1")
    directory = cluster.write_cacerts(tmp_path / "cacerts")
    material = load_plugged_in_material(directory, now=NOW)
    authority = CertificateAuthority(
        material, default_ttl=timedelta(hours=24), max_ttl=timedelta(days=90)
    )
    chain = authority.sign(parse_csr(new_csr()[1]), SLEEP, requested_seconds=0, now=NOW).cert_chain
    certs = [parse_certificates_pem(e) for e in chain[:-1]]
    assert [len(c) for c in certs] == [1, 1, 1, 1]
    assert [c[0] for c in certs[1:]] == [cluster.cert, regional.cert, root_ca.root_cert]
    assert chain[-1] == (directory / "root-cert.pem").read_text()


def test_kubernetes_tls_secret_layout(tmp_path: Path, cluster1_ca: TestCA) -> None:
    """``tls.crt`` / ``tls.key`` / ``ca.crt`` (a cert-manager style secret) is accepted too."""
    directory = tmp_path / "tls"
    directory.mkdir()
    (directory / "tls.crt").write_bytes(cluster1_ca.cert_pem)
    (directory / "tls.key").write_bytes(cluster1_ca.key_pem)
    (directory / "ca.crt").write_bytes(cluster1_ca.root_pem)
    material = load_plugged_in_material(directory, now=NOW)
    assert material.issuer.certificate == cluster1_ca.cert
    (directory / "ca.crt").unlink()
    with pytest.raises(CaMaterialError, match=r"missing ca\.crt"):
        load_plugged_in_material(directory, now=NOW)


def test_chain_file_must_end_at_a_root_of_root_cert(cluster1_ca: TestCA) -> None:
    from meshsec.ca.material import check_chain_file
    from meshsec.core.pki import TrustBundle

    names = {"cert": "ca-cert.pem", "root": "root-cert.pem"}
    own = TrustBundle((cluster1_ca.root_cert,))
    check_chain_file(Path("cert-chain.pem"), [cluster1_ca.cert], cluster1_ca.cert, own, names)
    foreign = TrustBundle((TestCA("other.mesh").root_cert,))
    with pytest.raises(CaMaterialError, match=r"neither in root-cert\.pem nor issued by") as err:
        check_chain_file(
            Path("cert-chain.pem"), [cluster1_ca.cert], cluster1_ca.cert, foreign, names
        )
    assert Path(err.value.path).name == "cert-chain.pem"


def _expiry_metrics(material: object) -> dict[str, float]:
    from prometheus_client import generate_latest

    from meshsec.ca.metrics import (
        CaCollector,
        allocate_counter_table,
        build_registry,
        parse_metrics_text,
        reported_chain_not_after,
    )

    collector = CaCollector(
        allocate_counter_table(1),
        1,
        root_not_after=material.root_not_after,  # type: ignore[attr-defined]
        chain_not_after=reported_chain_not_after(material),  # type: ignore[arg-type]
        now=lambda: NOW,
    )
    values = parse_metrics_text(generate_latest(build_registry(collector)).decode())
    return {k: v for k, v in values.items() if "expiry" in k}


def test_cert_chain_expiry_is_exported_for_a_plugged_in_ca_only(
    tmp_path: Path, cluster1_ca: TestCA
) -> None:
    """Istio: citadel_server_cert_chain_expiry_* only when the CA is plugged in."""
    self_signed = load_or_create_self_signed(
        tmp_path / "data", trust_domain=TrustDomain("cluster.local"), now=NOW, ttl=timedelta(1)
    )
    assert sorted(_expiry_metrics(self_signed)) == [
        "citadel_server_root_cert_expiry_seconds",
        "citadel_server_root_cert_expiry_timestamp",
    ]
    plugged = load_plugged_in_material(cluster1_ca.write_cacerts(tmp_path / "cacerts"), now=NOW)
    values = _expiry_metrics(plugged)
    expected = cluster1_ca.cert.not_valid_after_utc.timestamp()
    assert values["citadel_server_cert_chain_expiry_timestamp"] == expected
