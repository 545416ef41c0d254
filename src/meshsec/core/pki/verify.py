"""Certificate path validation (RFC 5280, the subset a mesh needs) and SPIFFE X.509-SVID rules.

Implemented directly on ``Certificate.verify_directly_issued_by`` rather than with
``cryptography.x509.verification``: that verifier applies Web PKI profile rules and reports
failures as free text, while a mesh needs SPIFFE leaves (empty subject, critical SAN) accepted and
each failure reported as a stable :class:`ChainFailure` naming the certificate at fault.

Checks, for every certificate on the path: validity period at ``now`` (inclusive), no unknown
critical extension; for every issuer: the signature below it verifies with its key, it is a CA
(BasicConstraints CA=true), it has keyCertSign when KeyUsage is present, and its path length
constraint admits the CA certificates below it. The path ends at a certificate of the trust
bundle (matched by subject name and signature). Extra certificates in ``intermediates`` that are
not on the path are ignored, as TLS stacks do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

from meshsec.core.identity import SpiffeId, TrustDomain
from meshsec.core.pki.bundle import TrustBundle
from meshsec.core.pki.errors import ChainFailure, ChainVerificationError
from meshsec.core.pki.svid import spiffe_id_of
from meshsec.core.pki.templates import basic_constraints_of, key_usage_of

MAX_INTERMEDIATES = 8

_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


@dataclass(frozen=True)
class VerifiedChain:
    """The validated path: leaf first, then the intermediates used, then the trust anchor."""

    path: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def root(self) -> x509.Certificate:
        return self.path[-1]

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self.path[1:-1]


def describe_certificate(cert: x509.Certificate) -> str:
    """A short name for messages: SPIFFE ID or subject, plus the serial."""
    label: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
        label = uris[0] if uris else (dns[0] if dns else None)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        label = None
    if label is None or (len(cert.subject) > 0 and _is_ca(cert)):
        label = cert.subject.rfc4514_string() or "<empty subject>"
    return f"{label[:200]!r} (serial {cert.serial_number:032x})"


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    bundle: TrustBundle,
    *,
    now: datetime,
) -> VerifiedChain:
    """Validate ``leaf`` up to a root of ``bundle`` at ``now``; ChainVerificationError if not."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (UTC)")
    if not bundle.certificates:
        raise ChainVerificationError("the trust bundle is empty", ChainFailure.UNKNOWN_AUTHORITY)
    _check_certificate(leaf, now, "leaf")
    path: list[x509.Certificate] = [leaf]
    pool = [c for c in intermediates if c != leaf]
    current = leaf
    while True:
        anchor, anchor_sig_failed = _find_issuer(current, bundle.issuers_of(current))
        if anchor is not None:
            _check_certificate(anchor, now, "root")
            _check_issuer_is_ca(anchor, current)
            path.append(anchor)
            break
        candidates = [c for c in pool if c.subject == current.issuer and c not in path]
        issuer, sig_failed = _find_issuer(current, candidates)
        if issuer is None:
            if anchor_sig_failed or sig_failed:
                raise ChainVerificationError(
                    f"signature of {describe_certificate(current)} does not verify with the key "
                    f"of its issuer {current.issuer.rfc4514_string()!r}",
                    ChainFailure.BAD_SIGNATURE,
                )
            where = "trust bundle" if current is leaf and not pool else "chain or trust bundle"
            raise ChainVerificationError(
                f"no certificate in the {where} issued {describe_certificate(current)} "
                f"(issuer {current.issuer.rfc4514_string()!r})",
                ChainFailure.UNKNOWN_AUTHORITY,
            )
        if len(path) > MAX_INTERMEDIATES:
            raise ChainVerificationError(
                f"chain has more than {MAX_INTERMEDIATES} intermediates", ChainFailure.UNSUPPORTED
            )
        _check_certificate(issuer, now, "intermediate")
        _check_issuer_is_ca(issuer, current)
        path.append(issuer)
        current = issuer
    _check_path_lengths(path)
    return VerifiedChain(tuple(path))


def verify_svid(
    chain: Sequence[x509.Certificate],
    bundle: TrustBundle,
    *,
    now: datetime,
    trust_domains: Iterable[TrustDomain] | None = None,
) -> SpiffeId:
    """Validate an X.509-SVID chain (leaf first) and return its SPIFFE ID.

    SPIFFE leaf rules: exactly one URI SAN holding a SPIFFE ID with a path, CA=false,
    digitalSignature and neither keyCertSign nor cRLSign; then path validation; then, if
    ``trust_domains`` is given, the ID's trust domain must be one of them.
    """
    if not chain:
        raise ChainVerificationError("empty certificate chain", ChainFailure.BAD_SAN)
    leaf = chain[0]
    spiffe_id = spiffe_id_of(leaf, require_path=True)
    if _is_ca(leaf):
        raise ChainVerificationError(
            f"leaf {describe_certificate(leaf)} is a CA certificate (BasicConstraints CA=true)",
            ChainFailure.LEAF_IS_CA,
        )
    key_usage = key_usage_of(leaf)
    if key_usage is not None:
        if key_usage.key_cert_sign or key_usage.crl_sign:
            raise ChainVerificationError(
                f"leaf {describe_certificate(leaf)} has keyCertSign or cRLSign key usage",
                ChainFailure.LEAF_IS_CA,
            )
        if not key_usage.digital_signature:
            raise ChainVerificationError(
                f"leaf {describe_certificate(leaf)} lacks the digitalSignature key usage",
                ChainFailure.BAD_KEY_USAGE,
            )
    verify_chain(leaf, chain[1:], bundle, now=now)
    if trust_domains is not None:
        allowed = tuple(trust_domains)
        if spiffe_id.trust_domain not in allowed:
            names = ", ".join(td.name for td in allowed) or "none"
            raise ChainVerificationError(
                f"{spiffe_id} is not in an accepted trust domain ({names})",
                ChainFailure.WRONG_TRUST_DOMAIN,
            )
    return spiffe_id


def _find_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, bool]:
    """First candidate whose key verifies ``cert``'s signature; and whether any candidate failed."""
    failed = False
    for candidate in candidates:
        try:
            cert.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError):
            failed = True
            continue
        return candidate, failed
    return None, failed


def _check_certificate(cert: x509.Certificate, now: datetime, role: str) -> None:
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        raise ChainVerificationError(
            f"{role} {describe_certificate(cert)} is not valid before {not_before.isoformat()}",
            ChainFailure.NOT_YET_VALID,
        )
    if now > not_after:
        raise ChainVerificationError(
            f"{role} {describe_certificate(cert)} expired at {not_after.isoformat()}",
            ChainFailure.EXPIRED,
        )
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise ChainVerificationError(
            f"{role} {describe_certificate(cert)} has malformed extensions: {exc}",
            ChainFailure.UNSUPPORTED,
        ) from None
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            name = getattr(ext.oid, "_name", None) or ext.oid.dotted_string
            raise ChainVerificationError(
                f"{role} {describe_certificate(cert)} has an unsupported critical extension {name}",
                ChainFailure.UNSUPPORTED,
            )


def _check_issuer_is_ca(issuer: x509.Certificate, child: x509.Certificate) -> None:
    if not _is_ca(issuer):
        raise ChainVerificationError(
            f"issuer {describe_certificate(issuer)} of {describe_certificate(child)} is not a CA "
            "(BasicConstraints CA=true missing)",
            ChainFailure.ISSUER_NOT_CA,
        )
    key_usage = key_usage_of(issuer)
    if key_usage is not None and not key_usage.key_cert_sign:
        raise ChainVerificationError(
            f"issuer {describe_certificate(issuer)} lacks the keyCertSign key usage",
            ChainFailure.ISSUER_NOT_CA,
        )


def _check_path_lengths(path: Sequence[x509.Certificate]) -> None:
    # path[i] for i ≥ 1 is a CA; the CA certificates strictly between it and the leaf are
    # path[1:i], of which the non-self-issued ones count against its pathLenConstraint.
    for i in range(1, len(path)):
        basic = basic_constraints_of(path[i])
        if basic is None or basic.path_length is None:
            continue
        below = sum(1 for c in path[1:i] if c.issuer != c.subject)
        if below > basic.path_length:
            raise ChainVerificationError(
                f"{describe_certificate(path[i])} allows {basic.path_length} intermediate CA(s) "
                f"below it, the chain has {below}",
                ChainFailure.PATHLEN_EXCEEDED,
            )


def _is_ca(cert: x509.Certificate) -> bool:
    basic = basic_constraints_of(cert)
    return basic is not None and basic.ca
