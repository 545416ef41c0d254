"""The CA process (istiod's CA): authenticate callers, sign workload CSRs, keep the root."""
