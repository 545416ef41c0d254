"""``meshsec agent run``: the node agent (pilot-agent's security half).

Every flag also has an environment variable (Istio's name where one exists; see
``meshsec.config.agent``); flags win over the environment, which wins over ``--config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meshsec.config.agent import AgentSettings
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings

agent_app = typer.Typer(
    help="The node agent: workload keys, rotation, Envoy SDS, SPIFFE Workload API.",
    no_args_is_help=True,
)


@agent_app.command("run")
def run(
    ca_addr: Annotated[
        str | None, typer.Option("--ca-addr", help="CA HOST:PORT (env CA_ADDR)")
    ] = None,
    ca_root: Annotated[
        Path | None,
        typer.Option("--ca-root", help="root that verifies the CA (env CA_ROOT_CA)"),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="service-account token (env MESHSEC_TOKEN_FILE)"),
    ] = None,
    cluster_id: Annotated[
        str | None,
        typer.Option("--cluster-id", help="clusterid header (env ISTIO_META_CLUSTER_ID)"),
    ] = None,
    sds_socket: Annotated[
        Path | None,
        typer.Option("--sds-socket", help="Envoy SDS socket (env MESHSEC_SDS_SOCKET)"),
    ] = None,
    workload_socket: Annotated[
        str | None,
        typer.Option(
            "--workload-socket", help="SPIFFE Workload API socket (env SPIFFE_ENDPOINT_SOCKET)"
        ),
    ] = None,
    output_certs: Annotated[
        Path | None,
        typer.Option("--output-certs", help="write cert files here (env OUTPUT_CERTS)"),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="status HTTP HOST:PORT (env MESHSEC_STATUS_ADDR)"),
    ] = None,
    trust_domain: Annotated[
        str | None, typer.Option("--trust-domain", help="trust domain (env TRUST_DOMAIN)")
    ] = None,
    ca_mtls_addr: Annotated[
        str | None,
        typer.Option(
            "--ca-mtls-addr",
            help="CA port for client-cert renewal without a token (env MESHSEC_CA_MTLS_ADDR)",
        ),
    ] = None,
    file_mounted_certs: Annotated[
        bool,
        typer.Option(
            "--file-mounted-certs",
            help="serve ./etc/certs files, no CA (env FILE_MOUNTED_CERTS)",
        ),
    ] = False,
    mounted_certs_dir: Annotated[
        Path | None,
        typer.Option(
            "--mounted-certs-dir", help="mounted certs dir (env MESHSEC_MOUNTED_CERTS_DIR)"
        ),
    ] = None,
    secret_ttl: Annotated[
        str | None, typer.Option("--secret-ttl", help="requested lifetime (env SECRET_TTL)")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="env MESHSEC_LOG_LEVEL")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="settings file (YAML)")] = None,
) -> None:
    """Get and rotate this workload's certificate; serve it over SDS, the Workload API, files.

    Runs until SIGTERM / SIGINT, then removes its sockets.
    """
    from meshsec.agent.run import run_agent
    from meshsec.config.agent import parse_unix_socket_path
    from meshsec.runtime.log import setup_logging

    try:
        workload_path = parse_unix_socket_path(workload_socket) if workload_socket else None
    except ValueError as exc:
        raise ConfigError([f"flag --workload-socket: {exc}"]) from None
    flags: dict[str, Any] = {
        "ca_addr": ca_addr,
        "ca_root": ca_root,
        "token_file": token_file,
        "cluster_id": cluster_id,
        "sds_socket": sds_socket,
        "workload_socket": workload_path,
        "output_certs": output_certs,
        "status": status,
        "trust_domain": trust_domain,
        "ca_mtls_addr": ca_mtls_addr,
        "file_mounted_certs": True if file_mounted_certs else None,
        "mounted_certs_dir": mounted_certs_dir,
        "secret_ttl": secret_ttl,
        "log_level": log_level,
    }
    settings = load_settings(AgentSettings, flags=flags, file=config)
    setup_logging(settings.log_level)
    raise typer.Exit(run_agent(settings))


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
