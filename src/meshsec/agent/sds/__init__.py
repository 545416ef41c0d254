"""Envoy Secret Discovery Service v3 (``StreamSecrets``, ``FetchSecrets``) over a Unix socket."""
