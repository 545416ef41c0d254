"""Shared trust for a multi-primary mesh: one mesh-wide root, an intermediate per primary.

What Istio's ``tools/certs`` Makefile does and ``meshsec certs root`` / ``certs intermediate``
do (the same library calls, :mod:`meshsec.core.pki`): a self-signed root (``O=<trust domain>,
CN=Root CA``) kept in ``.meshsec/mesh-root/`` and, per primary with ``ca.root: shared``, an Istio
plug-in CA directory (``ca-cert.pem`` with ``L=<cluster>``, ``ca-key.pem``, ``cert-chain.pem``,
``root-cert.pem``) handed to its CA with ``--cacerts``. Both are made once and reused by later
runs (the CAs' ledgers and the workloads' certificates stay consistent across restarts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from meshsec.core.identity import TrustDomain
from meshsec.core.pki import (
    CA_KEY,
    ROOT_CERT,
    ROOT_KEY,
    Issuer,
    KeySpec,
    MaterialFile,
    build_self_signed_root,
    compose_cacerts_files,
    compose_root_files,
    generate_private_key,
    issue_intermediate,
    parse_certificate_pem,
    parse_private_key_pem,
    random_serial,
)
from meshsec.core.pki.cacerts import CACERTS_FILES
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, FileContent, write_files_atomic

ISTIOD_SAN = "istiod.istio-system.svc"
MATERIAL_TTL = timedelta(days=3650)


def _write(directory: Path, files: Sequence[MaterialFile]) -> None:
    contents = {f.name: FileContent(f.data, KEY_MODE if f.secret else PUBLIC_MODE) for f in files}
    write_files_atomic(directory, contents, overwrite=True)


def ensure_mesh_root(directory: Path, *, trust_domain: str, now: datetime) -> Issuer:
    """The mesh-wide root in ``directory`` (``certs root``), created on first use."""
    cert_path, key_path = directory / ROOT_CERT, directory / ROOT_KEY
    if not (cert_path.exists() and key_path.exists()):
        key = generate_private_key(KeySpec.EC_P256)
        cert = build_self_signed_root(
            key,
            trust_domain=TrustDomain.parse(trust_domain),
            now=now,
            ttl=MATERIAL_TTL,
            serial=random_serial(os.urandom(16)),
            common_name="Root CA",
        )
        _write(directory, compose_root_files(cert, key))
    return Issuer(
        parse_certificate_pem(cert_path.read_bytes(), what="mesh root certificate"),
        parse_private_key_pem(key_path.read_bytes()),
    )


def ensure_intermediate(
    directory: Path, root: Issuer, *, cluster: str, trust_domain: str, now: datetime
) -> Path:
    """A cacerts directory for ``cluster`` signed by ``root`` (``certs intermediate``).

    Re-made when it is incomplete or was signed by another root (the mesh root was reset)."""
    if all((directory / name).exists() for name in CACERTS_FILES):
        current_root = (directory / ROOT_CERT).read_bytes()
        if parse_certificate_pem(current_root, what="root certificate") == root.certificate:
            return directory
    key = generate_private_key(KeySpec.EC_P256)
    cert = issue_intermediate(
        key.public_key(),
        root,
        name=cluster,
        trust_domain=TrustDomain.parse(trust_domain),
        now=now,
        ttl=MATERIAL_TTL,
        serial=random_serial(os.urandom(16)),
        path_length=0,
        dns_names=(ISTIOD_SAN,),
    )
    files = compose_cacerts_files(
        cert, key, intermediates_above=root.intermediates, roots=[root.certificate]
    )
    _write(directory, files)
    (directory / CA_KEY).chmod(KEY_MODE)
    return directory


__all__ = ["ensure_intermediate", "ensure_mesh_root"]
