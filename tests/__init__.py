"""The test suite. A package so that its helpers import as ``tests._kit.<module>``."""
