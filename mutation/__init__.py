"""Mutation testing of the deciding modules: see ``mutation/run.py`` and docs/contributing.md."""
