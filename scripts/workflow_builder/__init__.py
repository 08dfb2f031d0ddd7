"""Builds the shared example workflows; ``scripts/build_workflows.py`` is the command-line entry."""
