"""The ``openclaw`` command."""
