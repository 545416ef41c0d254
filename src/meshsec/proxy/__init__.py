"""The mTLS sidecar: inbound PeerAuthentication modes, outbound TLS with secure naming, authz."""
