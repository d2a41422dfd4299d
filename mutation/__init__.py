"""Mutation testing of the deciding modules: see ``mutation/run.py`` and the README's development section."""
