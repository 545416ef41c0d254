"""``file-cert:`` / ``file-root:`` SDS names (contract §4.2) and reading their files."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshsec.agent.errors import FileResourceError, FileResourceNameError
from meshsec.agent.sds import files
from meshsec.agent.sds.files import (
    FileResource,
    is_file_resource_name,
    load_file_secret,
    parse_file_resource_name,
)
from meshsec.core.pki import KeySpec, encode_private_key_pem, generate_private_key
from tests.testca import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("file-cert:/c.pem~/k.pem", FileResource("", cert=Path("/c.pem"), key=Path("/k.pem"))),
        ("file-cert:rel/c~rel/k", FileResource("", cert=Path("rel/c"), key=Path("rel/k"))),
        ("file-root:/etc/ca.pem", FileResource("", root=Path("/etc/ca.pem"))),
    ],
    ids=["cert-abs", "cert-rel", "root"],
)
def test_parse_names(name: str, expected: FileResource) -> None:
    parsed = parse_file_resource_name(name)
    assert (parsed.name, parsed.cert, parsed.key, parsed.root) == (
        name,
        expected.cert,
        expected.key,
        expected.root,
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("file-cert:/c.pem", "file-cert:<cert path>~<key path>"),
        ("file-cert:/c~/k~/x", "file-cert:<cert path>~<key path>"),
        ("file-cert:~/k.pem", "file-cert:<cert path>~<key path>"),
        ("file-cert:/c.pem~", "file-cert:<cert path>~<key path>"),
        ("file-root:", "file-root:<CA bundle path>"),
        ("file-root:/a~/b", "no '~'"),
        ("default", "not a file-cert: or file-root:"),
    ],
    ids=["no-tilde", "two-tildes", "empty-cert", "empty-key", "empty-root", "root-tilde", "other"],
)
def test_malformed_names_say_the_form(name: str, reason: str) -> None:
    with pytest.raises(FileResourceNameError, match=reason) as exc:
        parse_file_resource_name(name)
    assert exc.value.name == name


def test_is_file_resource_name() -> None:
    assert is_file_resource_name("file-cert:a~b")
    assert is_file_resource_name("file-root:x")
    assert not is_file_resource_name("default")
    assert not is_file_resource_name("ROOTCA")
    assert not is_file_resource_name("sds://x")


def test_system_root_is_the_first_existing_os_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: TestCA
) -> None:
    second = tmp_path / "second.pem"
    second.write_bytes(ca.root_pem)
    monkeypatch.setattr(files, "SYSTEM_CA_BUNDLES", (tmp_path / "absent.pem", second))
    assert parse_file_resource_name("file-root:system").root == second
    monkeypatch.setattr(files, "SYSTEM_CA_BUNDLES", (tmp_path / "absent.pem",))
    with pytest.raises(FileResourceError, match="no OS CA bundle found"):
        parse_file_resource_name("file-root:system")


def _cert_files(tmp_path: Path, ca: TestCA, *, matching: bool = True) -> FileResource:
    svid = ca.issue_svid("spiffe://cluster.local/ns/gw/sa/ingress", dns_names=("shop.example",))
    key = svid.private_key if matching else generate_private_key(KeySpec.EC_P256)
    cert, keyfile = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in svid.chain))
    keyfile.write_bytes(encode_private_key_pem(key))
    return parse_file_resource_name(f"file-cert:{cert}~{keyfile}")


def test_cert_and_key_are_served_as_read(tmp_path: Path, ca: TestCA) -> None:
    resource = _cert_files(tmp_path, ca)
    secret = load_file_secret(resource)
    assert secret.name == resource.name
    assert (
        secret.tls_certificate.certificate_chain.inline_bytes == (tmp_path / "tls.crt").read_bytes()
    )
    assert secret.tls_certificate.private_key.inline_bytes == (tmp_path / "tls.key").read_bytes()


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path, ca: TestCA) -> None:
    resource = _cert_files(tmp_path, ca, matching=False)
    with pytest.raises(FileResourceError, match="does not match the certificate"):
        load_file_secret(resource)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "does not exist"), (b"", "is empty"), (b"not pem", "tls.crt")],
    ids=["missing", "empty", "garbage"],
)
def test_unusable_cert_file(tmp_path: Path, ca: TestCA, content: bytes | None, reason: str) -> None:
    resource = _cert_files(tmp_path, ca)
    if content is None:
        (tmp_path / "tls.crt").unlink()
    else:
        (tmp_path / "tls.crt").write_bytes(content)
    with pytest.raises(FileResourceError, match=reason):
        load_file_secret(resource)


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 10)
    (tmp_path / "ca.pem").write_bytes(b"x" * 11)
    with pytest.raises(FileResourceError, match="larger than 10 bytes"):
        load_file_secret(parse_file_resource_name(f"file-root:{tmp_path / 'ca.pem'}"))


def test_root_bundle_skips_unparsable_certificates(tmp_path: Path, ca: TestCA) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_bytes(broken + ca.root_pem + b"-----BEGIN CERTIFICATE-----\nAB")
    secret = load_file_secret(parse_file_resource_name(f"file-root:{tmp_path / 'ca.pem'}"))
    assert secret.validation_context.trusted_ca.inline_bytes.strip() == ca.root_pem.strip()


@pytest.mark.parametrize(
    "content",
    [b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"no certificates here"],
    ids=["only-broken", "no-blocks"],
)
def test_root_bundle_without_a_valid_certificate(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "ca.pem").write_bytes(content)
    with pytest.raises(FileResourceError, match="no valid CERTIFICATE"):
        load_file_secret(parse_file_resource_name(f"file-root:{tmp_path / 'ca.pem'}"))
