"""Issuing certificates: workload SVIDs, the CA's serving certificate, roots and intermediates.

Every function is pure: ``now`` and ``serial`` come from the caller (see ``random_serial``).
``issue_workload_certificate`` is the CA's hot path, so it does only what must be done per call;
everything derived from the issuer is precomputed once in :class:`Issuer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki.errors import IssuanceError
from meshsec.core.pki.keys import PrivateKey, PublicKey, check_public_key, signature_hash
from meshsec.core.pki.templates import (
    CA_KEY_USAGE,
    CLOCK_SKEW_GRACE,
    DEFAULT_ROOT_TTL,
    LEAF_BASIC_CONSTRAINTS,
    LEAF_EKU,
    LEAF_KEY_USAGE,
    Issuer,
    WorkloadCertRequest,
    build_san,
    compose_dual_use_common_name,
)

_EMPTY_NAME = x509.Name([])
_LEAF_EXTENSIONS = (
    x509.Extension(ExtensionOID.KEY_USAGE, True, LEAF_KEY_USAGE),
    x509.Extension(ExtensionOID.EXTENDED_KEY_USAGE, False, LEAF_EKU),
    x509.Extension(ExtensionOID.BASIC_CONSTRAINTS, True, LEAF_BASIC_CONSTRAINTS),
)
_MAX_SERIAL = 1 << 159  # RFC 5280: at most 20 octets, positive


def issue_workload_certificate(
    req: WorkloadCertRequest, issuer: Issuer, *, now: datetime, serial: int
) -> x509.Certificate:
    """A SPIFFE X.509-SVID leaf for ``req.spiffe_id``, signed by ``issuer``.

    notBefore = now − 2 min; notAfter = now + ttl clamped to the issuer's notAfter. Raises
    IssuanceError if the issuer has expired, the TTL is not positive or the ID has no path, and
    KeyPolicyError if the public key is not allowed.
    """
    _check_now(now)
    if now >= issuer.not_after:
        raise IssuanceError(f"signing certificate has expired at {issuer.not_after.isoformat()}")
    if req.ttl <= timedelta(0):
        raise IssuanceError(f"TTL must be positive, got {req.ttl}")
    if not req.spiffe_id.path:
        raise IssuanceError(
            f"{req.spiffe_id} is a trust domain ID; an X.509-SVID needs a workload path"
        )
    _check_serial(serial)
    check_public_key(req.public_key)
    names: list[str | SpiffeId] = [req.spiffe_id, *req.dns_names]
    subject = _EMPTY_NAME
    if req.common_name is not None:
        common_name = compose_dual_use_common_name([req.common_name])
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    # The hot path: the extension list is handed to the builder whole (one distinct extension
    # of each type by construction), instead of six add_extension() copies of the builder.
    builder = x509.CertificateBuilder(
        issuer_name=issuer.subject,
        subject_name=subject,
        public_key=req.public_key,
        serial_number=serial,
        not_valid_before=now - CLOCK_SKEW_GRACE,
        not_valid_after=min(now + req.ttl, issuer.not_after),
        extensions=[
            *_LEAF_EXTENSIONS,
            x509.Extension(
                ExtensionOID.SUBJECT_KEY_IDENTIFIER,
                False,
                x509.SubjectKeyIdentifier.from_public_key(req.public_key),
            ),
            issuer.authority_key_identifier_extension,
            x509.Extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, True, build_san(names)),
        ],
    )
    return builder.sign(issuer.private_key, issuer.hash_algorithm)


def issue_server_certificate(
    dns_names: Sequence[str],
    public_key: PublicKey,
    issuer: Issuer,
    *,
    now: datetime,
    ttl: timedelta,
    serial: int,
) -> x509.Certificate:
    """A TLS serving certificate (e.g. the CA's own ``istiod.istio-system.svc``).

    Subject CN = first name (if ≤ 64 characters), SAN = all names (IP literals become iPAddress
    entries), EKU serverAuth + clientAuth, CA=false; notAfter clamped to the issuer's.
    """
    _check_now(now)
    if not dns_names:
        raise IssuanceError("a server certificate needs at least one DNS name or IP address")
    if now >= issuer.not_after:
        raise IssuanceError(f"signing certificate has expired at {issuer.not_after.isoformat()}")
    if ttl <= timedelta(0):
        raise IssuanceError(f"TTL must be positive, got {ttl}")
    _check_serial(serial)
    check_public_key(public_key)
    first = dns_names[0]
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)])
        if 0 < len(first) <= 64
        else _EMPTY_NAME
    )
    builder = (
        x509.CertificateBuilder(
            issuer_name=issuer.certificate.subject,
            subject_name=subject,
            public_key=public_key,
            serial_number=serial,
            not_valid_before=now - CLOCK_SKEW_GRACE,
            not_valid_after=min(now + ttl, issuer.not_after),
        )
        .add_extension(LEAF_KEY_USAGE, critical=True)
        .add_extension(LEAF_EKU, critical=False)
        .add_extension(LEAF_BASIC_CONSTRAINTS, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
        .add_extension(build_san(list(dns_names)), critical=len(subject) == 0)
    )
    return builder.sign(issuer.private_key, issuer.hash_algorithm)


def build_self_signed_root(
    key: PrivateKey,
    *,
    trust_domain: TrustDomain,
    now: datetime,
    ttl: timedelta = DEFAULT_ROOT_TTL,
    serial: int,
    common_name: str | None = None,
) -> x509.Certificate:
    """A self-signed root like Istio's: subject ``O=<trust domain>`` (optionally + CN), CA=true.

    notBefore = now − 2 min (tolerates clock skew of the machines that trust it).
    Re-issuing with the same key and subject keeps certificates signed under the old root valid.
    """
    _check_now(now)
    if ttl <= timedelta(0):
        raise IssuanceError(f"TTL must be positive, got {ttl}")
    _check_serial(serial)
    check_public_key(key.public_key())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain.name)]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    name = x509.Name(attrs)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder(
            issuer_name=name,
            subject_name=name,
            public_key=key.public_key(),
            serial_number=serial,
            not_valid_before=now - CLOCK_SKEW_GRACE,
            not_valid_after=now + ttl,
        )
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(key, signature_hash(key))


def issue_intermediate(
    public_key: PublicKey,
    issuer: Issuer,
    *,
    name: str,
    trust_domain: TrustDomain,
    now: datetime,
    ttl: timedelta,
    serial: int,
    path_length: int | None = 0,
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """An intermediate CA: subject ``O=<td>, L=<name>, CN=Intermediate CA``, CA=true.

    ``path_length`` 0 (the default) lets it sign only leaves. Refused when the issuer's own path
    length leaves no room for another CA below it. notAfter is clamped to the issuer's.
    ``dns_names`` (e.g. ``istiod.istio-system.svc`` as Istio's tools/certs adds) go in a SAN.
    """
    _check_now(now)
    if now >= issuer.not_after:
        raise IssuanceError(f"signing certificate has expired at {issuer.not_after.isoformat()}")
    if ttl <= timedelta(0):
        raise IssuanceError(f"TTL must be positive, got {ttl}")
    if not name:
        raise IssuanceError("intermediate name is empty")
    if path_length is not None and path_length < 0:
        raise IssuanceError(f"path length must be ≥ 0, got {path_length}")
    parent_len = issuer.path_length
    if parent_len is not None:
        if parent_len == 0:
            raise IssuanceError("the issuer has path length 0 and cannot sign another CA")
        if path_length is None or path_length > parent_len - 1:
            path_length = parent_len - 1
    _check_serial(serial)
    check_public_key(public_key)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain.name),
            x509.NameAttribute(NameOID.LOCALITY_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA"),
        ]
    )
    builder = (
        x509.CertificateBuilder(
            issuer_name=issuer.certificate.subject,
            subject_name=subject,
            public_key=public_key,
            serial_number=serial,
            not_valid_before=now - CLOCK_SKEW_GRACE,
            not_valid_after=min(now + ttl, issuer.not_after),
        )
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
    )
    if dns_names:
        builder = builder.add_extension(build_san(list(dns_names)), critical=False)
    return builder.sign(issuer.private_key, issuer.hash_algorithm)


def check_issued(cert: x509.Certificate, expected_id: SpiffeId) -> None:
    """Self-check of an issued workload certificate against the leaf contract (IssuanceError)."""
    problems = leaf_contract_problems(cert, expected_id)
    if problems:
        raise IssuanceError("issued certificate violates the leaf contract: " + "; ".join(problems))


def leaf_contract_problems(cert: x509.Certificate, expected_id: SpiffeId | None) -> list[str]:
    """Every way ``cert`` departs from the workload leaf contract (empty list when it conforms)."""
    problems: list[str] = []
    exts = cert.extensions
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        problems.append("no SubjectAlternativeName")
    else:
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            problems.append(f"expected exactly one URI SAN, found {len(uris)}")
        elif expected_id is not None and uris[0] != str(expected_id):
            problems.append(f"URI SAN is {uris[0]!r}, expected {str(expected_id)!r}")
        if len(cert.subject) == 0 and not san.critical:
            problems.append("SAN must be critical when the subject is empty")
    try:
        basic = exts.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        problems.append("no BasicConstraints")
    else:
        if basic.value.ca:
            problems.append("BasicConstraints CA=true on a leaf")
    try:
        ku = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        problems.append("no KeyUsage")
    else:
        if not ku.digital_signature:
            problems.append("KeyUsage lacks digitalSignature")
        if ku.key_cert_sign or ku.crl_sign:
            problems.append("KeyUsage has keyCertSign or cRLSign on a leaf")
    if cert.not_valid_after_utc <= cert.not_valid_before_utc:
        problems.append("notAfter is not after notBefore")
    return problems


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise IssuanceError("now must be a timezone-aware datetime (UTC)")


def _check_serial(serial: int) -> None:
    if not 0 < serial < _MAX_SERIAL:
        raise IssuanceError("serial must be a positive integer of at most 159 bits")
