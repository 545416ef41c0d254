"""Does a workload have its certificate? The ``certificate`` expectations of ``--check``.

* ``issued``: the agent holds a certificate (its ``OUTPUT_CERTS`` chain) that verifies under
  the root bundle its cluster trusts and names the workload's SPIFFE ID;
* ``refused``: the agent holds none, no CA ledger has an entry for that SPIFFE ID from that
  cluster, and a fresh CSR — made the way the agent makes it: the workload's own projected
  token and ``clusterid: <its cluster>`` to its cluster's CA — is refused; the CA's answer is
  the reason shown (``UNAUTHENTICATED: request authenticate failure (unknown cluster ...)``).

:func:`request_certificate` alone is the "fresh CSR" (the e2e tests use it to watch a remote
secret being removed and restored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from meshsec.agent.caclient import CaClient
from meshsec.agent.errors import UpstreamError
from meshsec.ca.errors import LedgerError
from meshsec.ca.ledger import LEDGER_FILE, load_issued
from meshsec.core.pki import (
    KeySpec,
    PkiError,
    TrustBundle,
    build_csr,
    encode_csr_pem,
    generate_private_key,
    parse_certificates_pem,
    verify_svid,
)

ISSUED = "issued"
REFUSED = "refused"


@dataclass(frozen=True)
class CertificateSubject:
    """What the probe needs about one workload (from the runtime or from state.json)."""

    ref: str  # as shown
    spiffe_id: str
    cluster: str
    cert_dir: Path
    root_pem_path: Path
    ca_addr: str
    token_path: Path | None  # None: mounted certificates (no CSR)
    ledgers: tuple[Path, ...]  # every CA data dir's ledger in the mesh
    since: datetime | None = (
        None  # ledger rows before this (an earlier run of the mesh) do not count
    )

    @classmethod
    def from_state(
        cls, workload: Mapping[str, Any], state: Mapping[str, Any], ref: str
    ) -> CertificateSubject:
        data_dirs = [c["ca"]["data_dir"] for c in state.get("clusters") or () if c.get("ca")]
        if not data_dirs:
            data_dirs = [state["ca"]["data_dir"]]
        token = workload.get("token_path")
        started = state.get("started_at")
        since = datetime.fromisoformat(started.replace("Z", "+00:00")) if started else None
        return cls(
            ref,
            str(workload["spiffe_id"]),
            str(workload.get("cluster") or "cluster1"),
            Path(workload["cert_dir"]),
            Path(workload.get("root_pem_path") or state["ca"]["root_pem_path"]),
            str(workload.get("ca_addr") or state["ca"]["addr"]),
            Path(token) if token else None,
            tuple(Path(d) / LEDGER_FILE for d in data_dirs),
            since,
        )


def held_certificate(subject: CertificateSubject, now: datetime) -> tuple[bool, str]:
    """Whether the agent's output verifies under its cluster's trust (and what it is)."""
    chain_path = subject.cert_dir / "cert-chain.pem"
    try:
        chain = parse_certificates_pem(chain_path.read_bytes())
    except OSError:
        return False, "the agent holds no certificate"
    except PkiError as exc:
        return False, f"{chain_path}: {exc}"
    serial = f"{chain[0].serial_number:032x}"
    try:
        bundle = TrustBundle.parse_pem(subject.root_pem_path.read_bytes())
        found = verify_svid(chain, bundle, now=now)
    except (OSError, PkiError) as exc:
        return False, f"the agent holds serial {serial}, which does not verify: {exc}"
    if str(found) != subject.spiffe_id:
        return False, f"the agent holds serial {serial} for {found}, not {subject.spiffe_id}"
    until = chain[0].not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return True, f"serial {serial} valid until {until}, verified under {subject.cluster}'s root"


def ledger_entries(subject: CertificateSubject) -> list[str]:
    """Serials any CA of the mesh issued for that SPIFFE ID to a caller from that cluster
    (since the mesh started, when known: the ledgers outlive a run)."""
    out: list[str] = []
    for path in subject.ledgers:
        try:
            out.extend(
                f"{r.serial} ({path.parent.name})"
                for r in load_issued(path)
                if r.spiffe_id == subject.spiffe_id
                and r.cluster == subject.cluster
                and (subject.since is None or r.issued_at >= subject.since)
            )
        except LedgerError:
            continue  # no ledger yet: nothing issued
    return out


async def request_certificate(
    subject: CertificateSubject, *, wait: float = 10.0
) -> tuple[bool, str]:
    """A fresh CSR as the workload's agent makes it; ``(signed, serial or the CA's answer)``."""
    if subject.token_path is None:
        return False, "mounted certificates: the workload makes no CSR"
    try:
        token = subject.token_path.read_text().strip()
        root = subject.root_pem_path.read_bytes()
    except OSError as exc:
        return False, f"cannot read the workload's token or root: {exc}"
    key = generate_private_key(KeySpec.EC_P256)
    try:
        async with CaClient(
            subject.ca_addr, root_pem=root, cluster_id=subject.cluster, timeout=wait
        ) as client:
            chain = await client.fetch_certificate_chain(
                encode_csr_pem(build_csr(key)), token=token
            )
    except UpstreamError as exc:
        return False, f"{exc.code}: {exc.detail}"
    leaf = parse_certificates_pem(chain[0].encode())[0]
    return True, f"serial {leaf.serial_number:032x}"


async def check_certificate(
    subject: CertificateSubject, expect: str, now: datetime
) -> tuple[str, str]:
    """``(got, detail)`` for a certificate expectation."""
    held, detail = held_certificate(subject, now)
    if expect == ISSUED:
        return (ISSUED if held else REFUSED), detail
    if held:
        return ISSUED, detail
    if (subject.cert_dir / "cert-chain.pem").exists():
        return ISSUED, f"the agent holds a certificate: {detail}"
    entries = ledger_entries(subject)
    if entries:
        return ISSUED, f"CA ledger has {subject.spiffe_id} from {subject.cluster}: {entries[0]}"
    signed, answer = await request_certificate(subject)
    if signed:
        return ISSUED, f"a fresh CSR with its token was signed ({answer})"
    return REFUSED, f"no certificate, none in the CA ledger; the CA answers {answer}"


__all__ = [
    "CertificateSubject",
    "check_certificate",
    "held_certificate",
    "ledger_entries",
    "request_certificate",
]
