"""What a workload trusts and what issued its certificate — for ``describe`` and
``proxy-config rootca-compare`` across clusters.

* Roots: what the workload's agent holds (``/debug/secrets`` ROOTCA, the bundle it serves over
  SDS), with the certificates themselves from the PEM files the agent writes (``cert_dir/
  root-cert.pem``) or was given (the workload's ``root_pem_path``); without an answering agent,
  those files alone.
* Certificate chain: the agent's ``cert_dir/cert-chain.pem`` (``mounted_dir`` for mounted
  certificates) — leaf, then the intermediates the CA sent (a multi-primary CA's per-cluster
  intermediate: ``CN=Intermediate CA, L=<cluster>``).
* Whether two workloads can do mTLS: each one's chain must verify (RFC 5280, ``core.pki``) up to
  a root the other trusts.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from meshsec.cli.admin_http import TIMEOUT, split_address
from meshsec.cli.meshstate import ClusterState, MeshState, WorkloadState
from meshsec.core.pki import (
    ChainVerificationError,
    InvalidPem,
    TrustBundle,
    parse_certificates_pem,
    verify_chain,
)
from meshsec.core.pki.bundle import certificate_fingerprint

CHAIN_FILE = "cert-chain.pem"
ROOT_FILE = "root-cert.pem"
MAX_PEM_BYTES = 1024 * 1024
AGENT_SOURCE = "agent /debug/secrets"


class RootRow(Protocol):
    """A ``/debug/secrets`` row as ``proxy-config`` parses it (``SecretRow``)."""

    @property
    def resource_name(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def serial_number(self) -> str: ...


@dataclass(frozen=True)
class TrustedRoot:
    subject: str
    fingerprint: str  # SHA-256 of the DER, hex
    source: str
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)

    @property
    def short(self) -> str:
        return f"sha256:{self.fingerprint[:16]}"


@dataclass(frozen=True)
class IssuerCert:
    subject: str
    common_name: str | None
    locality: str | None
    fingerprint: str
    self_signed: bool


@dataclass(frozen=True)
class CertificateChain:
    source: str
    serial: str  # %032x
    not_after: str
    issuers: tuple[IssuerCert, ...]  # above the leaf, as the file has them
    leaf: x509.Certificate = field(compare=False, repr=False)
    intermediates: tuple[x509.Certificate, ...] = field(default=(), compare=False, repr=False)

    @property
    def intermediate_label(self) -> str:
        """The signing intermediate's cluster (``L=``) or CN; ``root`` when the root signed."""
        first = next((i for i in self.issuers if not i.self_signed), None)
        if first is None:
            return "root"
        return first.locality or first.common_name or first.subject


@dataclass(frozen=True)
class WorkloadTrust:
    workload: WorkloadState
    roots: tuple[TrustedRoot, ...]
    roots_source: str
    chain: CertificateChain | None
    problem: str | None = None  # why roots or chain could not be read
    live_serial: str | None = None  # the agent's current certificate (when it answered)
    live: bool = False  # the agent answered
    chain_problem: str | None = None  # why no chain could be read

    @property
    def has_certificate(self) -> bool:
        return bool(self.live_serial) if self.live else self.chain is not None

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(r.fingerprint for r in self.roots)


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def build_issuer(cert: x509.Certificate) -> IssuerCert:
    return IssuerCert(
        subject=cert.subject.rfc4514_string(),
        common_name=_attribute(cert.subject, NameOID.COMMON_NAME),
        locality=_attribute(cert.subject, NameOID.LOCALITY_NAME),
        fingerprint=certificate_fingerprint(cert),
        self_signed=cert.subject == cert.issuer,
    )


def _read_pem(path: Path, what: str) -> list[x509.Certificate]:
    """Certificates from a PEM file; ValueError names the file and what was wrong."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{path}: larger than {MAX_PEM_BYTES} bytes")
    try:
        return parse_certificates_pem(data, what=what)
    except InvalidPem as exc:
        raise ValueError(f"{path}: {exc}") from None


def _roots_from_certs(certs: Sequence[x509.Certificate], source: str) -> tuple[TrustedRoot, ...]:
    return tuple(
        TrustedRoot(c.subject.rfc4514_string(), certificate_fingerprint(c), source, c)
        for c in certs
    )


def _root_files(workload: WorkloadState, state: MeshState | None) -> list[Path]:
    paths: list[Path] = []
    for directory in (workload.cert_dir, workload.mounted_dir):
        if directory:
            paths.append(Path(directory) / ROOT_FILE)
    if workload.root_pem_path:
        paths.append(Path(workload.root_pem_path))
    if state is not None and state.ca.root_pem_path:
        paths.append(Path(state.ca.root_pem_path))
    return list(dict.fromkeys(paths))


def load_trusted_roots(
    workload: WorkloadState, rows: Sequence[RootRow] | None, state: MeshState | None
) -> tuple[tuple[TrustedRoot, ...], str, str | None]:
    """(roots, where they came from, problem). The agent's ROOTCA when it answered (each
    matched with its certificate from the PEM files by fingerprint), else the first readable
    root file."""
    files = _root_files(workload, state)
    known: dict[str, x509.Certificate] = {}
    first_file: tuple[Path, list[x509.Certificate]] | None = None
    problems: list[str] = []
    for path in files:
        try:
            certs = _read_pem(path, "root certificate")
        except ValueError as exc:
            if path.exists():
                problems.append(str(exc))
            continue
        first_file = first_file or (path, certs)
        for cert in certs:
            known.setdefault(certificate_fingerprint(cert), cert)
    agent_rows = [r for r in rows or () if r.resource_name == "ROOTCA" and r.fingerprint]
    if agent_rows:
        roots = tuple(
            TrustedRoot(
                r.subject or "", r.fingerprint or "", AGENT_SOURCE, known.get(r.fingerprint or "")
            )
            for r in agent_rows
        )
        return roots, AGENT_SOURCE, None
    if first_file is not None:
        path, certs = first_file
        return _roots_from_certs(certs, str(path)), str(path), None
    problem = "; ".join(problems) or "no root file found (" + ", ".join(map(str, files)) + ")"
    return (), "", problem


def load_certificate_chain(workload: WorkloadState) -> tuple[CertificateChain | None, str | None]:
    """The chain the agent wrote (``cert_dir``) or the mounted one; (None, why) without one."""
    tried: list[str] = []
    for directory in (workload.cert_dir, workload.mounted_dir):
        if not directory:
            continue
        path = Path(directory) / CHAIN_FILE
        if not path.exists():
            tried.append(f"{path}: not written yet")
            continue
        try:
            certs = _read_pem(path, "certificate chain")
        except ValueError as exc:
            tried.append(str(exc))
            continue
        leaf, above = certs[0], certs[1:]
        return (
            CertificateChain(
                source=str(path),
                serial=f"{leaf.serial_number:032x}",
                not_after=leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                issuers=tuple(build_issuer(c) for c in above),
                leaf=leaf,
                intermediates=tuple(c for c in above if c.subject != c.issuer),
            ),
            None,
        )
    return None, "; ".join(tried) or "state.json lists no certificate directory"


def load_workload_trust(
    workload: WorkloadState, rows: Sequence[RootRow] | None, state: MeshState | None
) -> WorkloadTrust:
    roots, source, root_problem = load_trusted_roots(workload, rows, state)
    chain, chain_problem = load_certificate_chain(workload)
    live_serial = next(
        (r.serial_number for r in rows or () if r.resource_name == "default" and r.serial_number),
        None,
    )
    problem = root_problem or (None if workload.refused_expected else chain_problem)
    return WorkloadTrust(
        workload,
        roots,
        source,
        chain,
        problem,
        live_serial=live_serial,
        live=rows is not None,
        chain_problem=chain_problem,
    )


def verify_peer_chain(
    chain: CertificateChain, roots: Sequence[TrustedRoot], now: datetime
) -> str | None:
    """None when ``chain`` verifies up to one of ``roots`` (as the peer's TLS stack would check
    it), else why not."""
    certs = tuple(r.certificate for r in roots if r.certificate is not None)
    if not certs:
        return "no root certificates to verify against"
    try:
        verify_chain(chain.leaf, chain.intermediates, TrustBundle(certs), now=now)
    except ChainVerificationError as exc:
        return exc.reason
    return None


def describe_issuers(
    chain: CertificateChain, roots: Sequence[TrustedRoot], now: datetime
) -> list[str]:
    """Each certificate above the leaf (``CN=Intermediate CA,L=cluster1,…``), the root it
    chains to (trusted or not), and whether the chain verifies against the workload's roots."""
    trusted = {r.fingerprint for r in roots}
    counts: dict[str, int] = {}
    for issuer in chain.issuers:
        counts[issuer.fingerprint] = counts.get(issuer.fingerprint, 0) + 1
    lines: list[str] = []
    for issuer in chain.issuers:
        if counts.get(issuer.fingerprint) is None:
            continue  # printed already
        times = counts.pop(issuer.fingerprint)
        repeated = f", {times} times in the file" if times > 1 else ""
        if issuer.self_signed:
            verdict = "trusted" if issuer.fingerprint in trusted else "NOT in its trusted roots"
            kind = f"root, {verdict}"
        else:
            kind = "intermediate"
        lines.append(f"{issuer.subject} ({kind}, sha256:{issuer.fingerprint[:16]}{repeated})")
    if not any(i.self_signed for i in chain.issuers):
        top = chain.intermediates[-1] if chain.intermediates else chain.leaf
        name = top.issuer.rfc4514_string()
        anchor = next(
            (
                r
                for r in roots
                if (r.certificate.subject == top.issuer if r.certificate else r.subject == name)
            ),
            None,
        )
        where = f"trusted, {anchor.short}" if anchor else "NOT in its trusted roots"
        lines.append(f"{name} (root, {where})")
    if any(r.certificate is not None for r in roots):
        problem = verify_peer_chain(chain, roots, now)
        lines.append(
            "verifies up to a root it trusts"
            if problem is None
            else f"DOES NOT VERIFY against its trusted roots: {problem}"
        )
    return lines


def cluster_text(cluster: ClusterState | None, name: str) -> str:
    if cluster is None:
        return f"{name or '-'} (not described in state.json)"
    root = f", {cluster.ca_root} root" if cluster.ca_root else ""
    return f"{cluster.name} ({cluster.role_text}, network {cluster.network}{root})"


def fetch_ca_signer(addr: str, root_pem: bytes | None) -> str | None:
    """The issuer of the CA's serving certificate (= the CA's signing certificate's subject),
    read from a TLS handshake with the CA; None when the CA does not answer."""
    try:
        host, port = split_address(addr)
    except ValueError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if root_pem:
        context.load_verify_locations(cadata=root_pem.decode("ascii", "replace"))
    else:
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT) as sock,
            context.wrap_socket(sock, server_hostname=None) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if not der:
        return None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


@dataclass(frozen=True)
class TrustRelation:
    """Whether two workloads (in any clusters) can do mTLS, and the sentence saying why."""

    can_talk: bool
    lines: tuple[str, ...]
    shared: tuple[TrustedRoot, ...]
    problems: tuple[str, ...] = ()


def _where(trust: WorkloadTrust) -> str:
    return trust.workload.cluster or trust.workload.ref


def compose_trust_relation(a: WorkloadTrust, b: WorkloadTrust, now: datetime) -> TrustRelation:
    """The cross-cluster situation: a shared root (and each side's intermediate), a different
    root, or a side without a certificate — checked by verifying each chain against the other
    side's roots when the certificates are at hand."""
    ca, cb = _where(a), _where(b)
    shared = tuple(r for r in a.roots if r.fingerprint in b.fingerprints)
    lines: list[str] = []
    missing: list[str] = []  # said first: it decides, whatever the roots say
    problems: list[str] = []
    for side in (a, b):
        if not side.has_certificate:
            why = (
                f"expected: {side.workload.cluster} has no remote secret in its primary's CA"
                if side.workload.refused_expected
                else "its agent holds none yet"
            )
            missing.append(f"{side.workload.ref} has no certificate ({why})")
    for peer, verifier in ((a, b), (b, a)):
        if peer.chain is None or not any(r.certificate for r in verifier.roots):
            continue  # nothing to verify with: the root fingerprints decide
        why_not = verify_peer_chain(peer.chain, verifier.roots, now)
        if why_not is not None:
            problems.append(
                f"{_where(verifier)} does not accept the certificate of {peer.workload.ref}: "
                f"{why_not}"
            )
    same_cluster = ca == cb
    if shared:
        root = shared[0]
        subject = f" ({root.subject})" if root.subject else ""
        intermediates = ", ".join(
            t.chain.intermediate_label
            if t.chain
            else ("unknown" if t.has_certificate else "no certificate")
            for t in (a, b)
        )
        who = f"both in {ca}" if same_cluster else f"{ca} and {cb}"
        verb = "share root" if not same_cluster else "root"
        lines.append(f"{who} {verb} {root.short}{subject} (intermediates: {intermediates})")
    elif a.roots and b.roots:
        lines.append(
            f"{cb} trusts a different root ({', '.join(r.short for r in b.roots)}) than {ca} "
            f"({', '.join(r.short for r in a.roots)}): mTLS between them will fail"
        )
    else:
        empty = a if not a.roots else b
        lines.append(
            f"{empty.workload.ref} holds no root yet ({empty.problem or 'its agent is warming'}): "
            "mTLS with it will fail"
        )
    for side in (a, b):
        if side.roots and side.roots_source != AGENT_SOURCE:
            lines.append(
                f"note: {side.workload.ref}'s agent reports no ROOTCA; its roots were read from "
                f"{side.roots_source}"
            )
    lines = missing + lines + problems
    problems = missing + problems
    can_talk = bool(shared) and not problems
    return TrustRelation(can_talk, tuple(lines), shared, tuple(problems))
