"""``python -m digitlab``: the same as the ``digitlab`` command."""

from digitlab.cli import main

main()
