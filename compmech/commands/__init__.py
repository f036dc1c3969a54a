"""Subcommands of the ``compmech`` CLI (one module each, discovered by compmech.cli)."""
