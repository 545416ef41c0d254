"""``meshsec certs root | intermediate`` and ``meshsec cert inspect``: operator certificate tools.

``certs root`` and ``certs intermediate`` produce what Istio's ``tools/certs`` Makefile does
(a root, then one plug-in ``cacerts`` directory per cluster), with ECDSA P-256 keys by default
(fast to sign with; ``--key-type rsa-2048|rsa-3072|rsa-4096|ec-p384`` for the others). Every
file is generated in memory first, then written atomically; keys are 0600; existing files are
never overwritten without ``--force``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from cryptography import x509
from cryptography.x509.oid import NameOID
from rich.console import Console
from rich.table import Table

from meshsec.core.identity import InvalidTrustDomain, TrustDomain
from meshsec.core.pki import (
    CA_KEY,
    ROOT_CERT,
    ROOT_KEY,
    CaMaterialError,
    CertificateSummary,
    IssuanceError,
    Issuer,
    KeySpec,
    MaterialFile,
    PkiError,
    build_self_signed_root,
    check_chain_order,
    compose_cacerts_files,
    compose_root_files,
    format_remaining,
    generate_private_key,
    issue_intermediate,
    parse_certificate_pem,
    parse_certificates_any,
    parse_private_key_pem,
    random_serial,
    summarize_certificate,
)
from meshsec.core.policy.document import check_dns1123_label
from meshsec.errors import MeshsecError
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, FileContent, write_files_atomic

ISTIOD_SAN = "istiod.istio-system.svc"
_T = TypeVar("_T")
EXIT_FOUND_PROBLEM = 1

certs_app = typer.Typer(
    help="Create a mesh root and per-cluster plug-in CA (cacerts) directories.",
    no_args_is_help=True,
)
cert_app = typer.Typer(help="Look at certificates.", no_args_is_help=True)


class InputFileError(MeshsecError):
    """A file named on the command line cannot be read or understood."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


KeyTypeOption = Annotated[
    str,
    typer.Option(
        "--key-type",
        help="ec-p256 (default, fast), ec-p384, rsa-2048, rsa-3072 or rsa-4096",
    ),
]


@certs_app.command("root")
def root(
    out: Annotated[Path, typer.Option("--out", help="directory for root-cert.pem, root-key.pem")],
    trust_domain: Annotated[
        str, typer.Option("--trust-domain", help="mesh trust domain; the root's O=")
    ] = "cluster.local",
    key_type: KeyTypeOption = "ec-p256",
    days: Annotated[int, typer.Option("--days", help="validity in days", min=1)] = 3650,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """A self-signed mesh root CA (O=<trust domain>, CN=Root CA, 10 years by default)."""
    td = _trust_domain(trust_domain)
    spec = KeySpec.parse(key_type)
    key = generate_private_key(spec)
    cert = build_self_signed_root(
        key,
        trust_domain=td,
        now=datetime.now(UTC),
        ttl=timedelta(days=days),
        serial=random_serial(os.urandom(16)),
        common_name="Root CA",
    )
    written = _write(out, compose_root_files(cert, key), force=force)
    _report(written, f"root CA for trust domain {td} ({spec.value}, {days} days)")


@certs_app.command("intermediate")
def intermediate(
    root_dir: Annotated[
        Path, typer.Option("--root", help="directory with root-cert.pem and root-key.pem")
    ],
    name: Annotated[
        str, typer.Option("--name", help="cluster name (DNS-1123 label); the intermediate's L=")
    ],
    out: Annotated[Path, typer.Option("--out", help="cacerts directory to create")],
    trust_domain: Annotated[
        str | None,
        typer.Option(
            "--trust-domain", help="O= of the intermediate [the root's O, or cluster.local]"
        ),
    ] = None,
    key_type: KeyTypeOption = "ec-p256",
    days: Annotated[
        int, typer.Option("--days", help="validity in days (clamped to the root's)", min=1)
    ] = 3650,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """An Istio plug-in CA directory: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem."""
    _cluster_name(name)
    root_cert_path, root_key_path = root_dir / ROOT_CERT, root_dir / ROOT_KEY
    root_cert = _load_material(
        root_cert_path, lambda data: parse_certificate_pem(data, what="root certificate")
    )
    root_key = _load_material(root_key_path, parse_private_key_pem)
    try:
        issuer = Issuer(root_cert, root_key)
    except IssuanceError as exc:
        raise CaMaterialError(str(root_dir), f"cannot sign with this root: {exc}") from None
    td = _trust_domain(trust_domain) if trust_domain else _root_trust_domain(root_cert)
    spec = KeySpec.parse(key_type)
    key = generate_private_key(spec)
    cert = issue_intermediate(
        key.public_key(),
        issuer,
        name=name,
        trust_domain=td,
        now=datetime.now(UTC),
        ttl=timedelta(days=days),
        serial=random_serial(os.urandom(16)),
        path_length=0,
        dns_names=(ISTIOD_SAN,),
    )
    files = compose_cacerts_files(
        cert, key, intermediates_above=issuer.intermediates, roots=[root_cert]
    )
    written = _write(out, files, force=force)
    _report(written, f"intermediate CA {name!r} for trust domain {td} ({spec.value})")


@cert_app.command("inspect")
def inspect(
    file: Annotated[Path, typer.Argument(help="PEM (one certificate or a chain) or DER file")],
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Show each certificate (SPIFFE ID, names, validity, CA, key) and check the chain order.

    Exits 1 when the chain is out of order or a certificate is expired or not yet valid.
    """
    if output not in ("table", "json"):
        raise typer.BadParameter(f"{output!r} is not table or json", param_hint="'-o'")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputFileError(file, f"cannot read: {exc.strerror or exc}") from None
    try:
        certs = parse_certificates_any(data, what=str(file))
    except PkiError as exc:
        raise InputFileError(file, str(exc).removeprefix(f"invalid {file}: ")) from None
    now = datetime.now(UTC)
    summaries = [summarize_certificate(c, now=now, index=i) for i, c in enumerate(certs)]
    problems = check_chain_order(certs)
    if output == "json":
        doc = {
            "file": str(file),
            "certificates": [_summary_json(s) for s in summaries],
            "chain": {"ordered": not problems, "problems": problems},
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        _print_tables(file, summaries, problems)
    if problems or any(s.status != "valid" for s in summaries):
        raise typer.Exit(EXIT_FOUND_PROBLEM)


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
    app.add_typer(cert_app, name="cert")


# --- helpers ---------------------------------------------------------------------------------


def _trust_domain(value: str) -> TrustDomain:
    try:
        return TrustDomain.parse(value)
    except InvalidTrustDomain as exc:
        raise typer.BadParameter(
            f"{value!r}: {exc.reason}", param_hint="'--trust-domain'"
        ) from None


def _cluster_name(value: str) -> None:
    """A cluster id, as Kubernetes and Istio name them (it becomes the intermediate's L=)."""
    problem = check_dns1123_label(value)
    if problem is not None:
        raise typer.BadParameter(
            f"{value!r} is not a DNS-1123 label ({problem})", param_hint="'--name'"
        )


def _root_trust_domain(cert: x509.Certificate) -> TrustDomain:
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if orgs:
        try:
            return TrustDomain(str(orgs[0].value))
        except InvalidTrustDomain:
            pass
    return TrustDomain("cluster.local")


def _load_material(path: Path, parse: Callable[[bytes], _T]) -> _T:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaMaterialError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return parse(data)
    except PkiError as exc:
        raise CaMaterialError(str(path), str(exc)) from None


def _write(out: Path, files: Sequence[MaterialFile], *, force: bool) -> list[Path]:
    contents = {f.name: FileContent(f.data, KEY_MODE if f.secret else PUBLIC_MODE) for f in files}
    return write_files_atomic(out, contents, overwrite=force)


def _report(written: Sequence[Path], what: str) -> None:
    typer.echo(f"created {what}:")
    for path in written:
        mode = "0600" if path.name in (ROOT_KEY, CA_KEY) else "0644"
        typer.echo(f"  {path}  ({mode})")


def _summary_json(s: CertificateSummary) -> dict[str, Any]:
    return {
        "index": s.index,
        "spiffe_id": s.spiffe_id,
        "uris": list(s.uris),
        "dns_names": list(s.dns_names),
        "ip_addresses": list(s.ip_addresses),
        "subject": s.subject,
        "issuer": s.issuer,
        "serial": s.serial_hex,
        "not_before": s.not_before.isoformat(),
        "not_after": s.not_after.isoformat(),
        "expires_in_seconds": int(s.expires_in.total_seconds()),
        "status": s.status,
        "is_ca": s.is_ca,
        "path_length": s.path_length,
        "key_type": s.key_type,
        "self_signed": s.self_signed,
        "sha256": s.sha256,
    }


def _print_tables(file: Path, summaries: Sequence[CertificateSummary], problems: list[str]) -> None:
    console = Console(highlight=False, soft_wrap=False, width=max(Console().width, 100))
    console.print(f"{file}: {len(summaries)} certificate(s)")
    for s in summaries:
        role = _role(s, len(summaries))
        table = Table(title=f"[{s.index}] {role}", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("SPIFFE ID", s.spiffe_id or "-")
        if s.dns_names or s.ip_addresses:
            table.add_row("DNS/IP SANs", ", ".join((*s.dns_names, *s.ip_addresses)))
        table.add_row("subject", s.subject or "(empty)")
        table.add_row("issuer", s.issuer or "(empty)")
        table.add_row("serial", s.serial_hex)
        table.add_row("not before", s.not_before.isoformat())
        table.add_row("not after", s.not_after.isoformat())
        table.add_row("expires in", format_remaining(s.expires_in))
        table.add_row("status", s.status)
        ca = "yes" if s.is_ca else "no"
        if s.is_ca and s.path_length is not None:
            ca += f" (pathlen {s.path_length})"
        table.add_row("CA", ca)
        table.add_row("key", s.key_type)
        console.print(table)
    if len(summaries) > 1:
        if problems:
            for problem in problems:
                console.print(f"chain order: PROBLEM: {problem}")
        else:
            console.print("chain order: ok (each certificate is issued by the next)")


def _role(s: CertificateSummary, count: int) -> str:
    if s.self_signed and s.is_ca:
        return "root CA"
    if s.is_ca:
        return "intermediate CA"
    return "leaf" if s.index == 0 or count == 1 else "leaf (misplaced?)"
