"""Human-facing summaries of certificates and chains (``meshsec cert inspect``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from meshsec.core.pki.bundle import certificate_fingerprint
from meshsec.core.pki.keys import describe_public_key


@dataclass(frozen=True)
class CertificateSummary:
    index: int
    spiffe_id: str | None
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    subject: str
    issuer: str
    serial_hex: str
    not_before: datetime
    not_after: datetime
    expires_in: timedelta
    is_ca: bool
    path_length: int | None
    key_type: str
    self_signed: bool
    sha256: str
    status: str  # "valid", "expired" or "not yet valid" at the time of the summary


def summarize_certificate(
    cert: x509.Certificate, *, now: datetime, index: int = 0
) -> CertificateSummary:
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        pass
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca, path_length = basic.ca, basic.path_length
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        is_ca, path_length = False, None
    spiffe = [u for u in uris if u.startswith("spiffe://")]  # the scheme is lower-case only
    try:
        key_type = describe_public_key(cert.public_key())
    except (ValueError, TypeError):
        key_type = "unreadable"
    return CertificateSummary(
        index=index,
        spiffe_id=spiffe[0] if len(spiffe) == 1 else None,
        uris=uris,
        dns_names=dns,
        ip_addresses=ips,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial_hex=f"{cert.serial_number:032x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        expires_in=cert.not_valid_after_utc - now,
        is_ca=is_ca,
        path_length=path_length,
        key_type=key_type,
        self_signed=cert.issuer == cert.subject,
        sha256=certificate_fingerprint(cert),
        status=(
            "expired"
            if now > cert.not_valid_after_utc
            else "not yet valid"
            if now < cert.not_valid_before_utc
            else "valid"
        ),
    )


def check_chain_order(certs: Sequence[x509.Certificate]) -> list[str]:
    """Problems with a leaf-first chain: each certificate must be issued by the next one."""
    problems: list[str] = []
    for i in range(len(certs) - 1):
        child, parent = certs[i], certs[i + 1]
        if child.issuer != parent.subject:
            problems.append(
                f"certificate {i} is issued by {child.issuer.rfc4514_string()!r} but certificate "
                f"{i + 1} is {parent.subject.rfc4514_string()!r} "
                "(wrong order or a missing certificate)"
            )
            continue
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            problems.append(
                f"certificate {i}'s signature does not verify with certificate {i + 1}'s key"
            )
    return problems


def format_remaining(delta: timedelta) -> str:
    """``89d23h``, ``5h12m``, ``42s``; ``expired 3d2h ago`` when negative."""
    if delta < timedelta(0):
        return f"expired {_compact(-delta)} ago"
    return _compact(delta)


def _compact(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"
