"""``python -m meshsec.agent run [FLAGS]``: the lean agent process (no CLI framework loaded)."""

import sys

from meshsec.agent.command import entrypoint

sys.exit(entrypoint())
