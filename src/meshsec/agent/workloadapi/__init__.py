"""SPIFFE Workload API (X.509 profile) over a Unix socket."""
