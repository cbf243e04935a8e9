"""``python -m keyhouse`` runs the command line interface."""

from keyhouse.cli import main

main()
