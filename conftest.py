"""Registers the infermatrix plugin; nothing else lives here."""
pytest_plugins = ["infermatrix.fixtures.plugin"]
