"""Client TLS vs server mode: the combinations that cannot work (the check Istio removed)."""

from __future__ import annotations

import pytest

from meshsec.core.policy.destination import ClientTls, TlsSource
from meshsec.core.policy.explain import (
    check_client_server,
    check_transport,
    endpoint_client_tls_mode,
)
from meshsec.core.policy.model import MtlsMode, TlsMode

S, P, D = MtlsMode.STRICT, MtlsMode.PERMISSIVE, MtlsMode.DISABLE


def client(mode: TlsMode, *, auto: bool = False) -> ClientTls:
    return ClientTls(
        host="h",
        port=80,
        subset=None,
        mode=mode,
        auto=auto,
        source=TlsSource.AUTO if auto else TlsSource.DESTINATION,
        destination_rule=None,
        scope=None,
        settings=None,
        sni=None,
        subject_alt_names=(),
        reason="test",
    )


@pytest.mark.parametrize(
    ("tls", "server", "conflict"),
    [
        pytest.param(TlsMode.DISABLE, S, "STRICT", id="plaintext-to-strict"),
        pytest.param(TlsMode.DISABLE, P, None, id="plaintext-to-permissive"),
        pytest.param(TlsMode.DISABLE, D, None, id="plaintext-to-disable"),
        pytest.param(TlsMode.ISTIO_MUTUAL, S, None, id="mtls-to-strict"),
        pytest.param(TlsMode.ISTIO_MUTUAL, P, None, id="mtls-to-permissive"),
        pytest.param(TlsMode.ISTIO_MUTUAL, D, "DISABLE", id="mtls-to-disable"),
        pytest.param(TlsMode.SIMPLE, D, None, id="app-tls-to-disable-passes-through"),
        pytest.param(TlsMode.ISTIO_MUTUAL, None, None, id="named-target-port-unknown"),
    ],
)
def test_check_client_server(tls: TlsMode, server: MtlsMode | None, conflict: str | None) -> None:
    found = check_client_server(client(tls), server)
    if conflict is None:
        assert found is None
    else:
        assert found is not None
        assert conflict in found


def test_auto_mtls_to_a_disabled_endpoint_is_plaintext_not_a_conflict() -> None:
    """Istio's EDS marks a DISABLE endpoint tlsMode=disabled, so auto mTLS sends plaintext."""
    auto = client(TlsMode.ISTIO_MUTUAL, auto=True)
    assert check_client_server(auto, D) is None
    assert endpoint_client_tls_mode(auto, D) is TlsMode.DISABLE
    assert endpoint_client_tls_mode(auto, S) is TlsMode.ISTIO_MUTUAL
    assert endpoint_client_tls_mode(auto, P) is TlsMode.ISTIO_MUTUAL
    explicit = client(TlsMode.ISTIO_MUTUAL)
    assert endpoint_client_tls_mode(explicit, D) is TlsMode.ISTIO_MUTUAL
    found = check_client_server(explicit, D)
    assert found is not None
    assert "set by a DestinationRule" in found


@pytest.mark.parametrize(
    ("mode", "principal", "accepted"),
    [
        pytest.param(S, None, False, id="plaintext-strict"),
        pytest.param(P, None, True, id="plaintext-permissive"),
        pytest.param(D, None, True, id="plaintext-disable"),
        pytest.param(S, "spiffe://td/ns/a/sa/b", True, id="mtls-strict"),
        pytest.param(P, "spiffe://td/ns/a/sa/b", True, id="mtls-permissive"),
        pytest.param(D, "spiffe://td/ns/a/sa/b", False, id="mtls-disable"),
    ],
)
def test_check_transport(mode: MtlsMode, principal: str | None, accepted: bool) -> None:
    result = check_transport(8080, mode, principal)
    assert result.accepted is accepted
    assert "8080" in result.reason
