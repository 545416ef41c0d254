"""The node agent (pilot-agent's security half): keys, CSRs, rotation, SDS, Workload API, files.

Modules (imported directly; this package imports nothing so that ``meshsec.agent.caclient``
stays cheap for other callers):

* ``command`` — the ``agent run`` command line (``python -m meshsec.agent run``: the lean
  process ``meshsec agent run`` execs into); ``server.Agent`` — assembly: store + producer +
  servers; ``run.run_agent`` — the process;
* ``rotation.CertificateRotator`` (+ the ``CaClient`` Protocol it consumes), ``caclient`` (gRPC);
* ``mounted.MountedCertsWatcher`` — ``FILE_MOUNTED_CERTS``; ``tokens`` — the token file;
* ``store.SecretStore`` / ``secret.WorkloadSecret`` — what every consumer reads;
* ``sds`` (Envoy SDS v3; ``sds.files``: ``file-cert:`` / ``file-root:`` resources),
  ``workloadapi`` (SPIFFE Workload API), ``output`` (``OUTPUT_CERTS``),
  ``status`` (HTTP status port), ``metrics`` (``istio_agent_*``), ``sockets`` (UDS paths).
"""
