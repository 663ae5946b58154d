"""The ``statekeeper`` command's groups (only ``statekeeper.cli`` imports them)."""
