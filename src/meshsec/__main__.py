from meshsec.cli.main import entrypoint

entrypoint()
