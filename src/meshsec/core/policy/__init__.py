"""Istio's PeerAuthentication, DestinationRule and AuthorizationPolicy: models and semantics."""
