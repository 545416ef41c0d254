"""The node agent (pilot-agent's security half): keys, CSRs, rotation, SDS, Workload API, files."""
