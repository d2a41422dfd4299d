"""Apache Airflow provider for the OpenAI Batch API.

Kept import-light on purpose: every Airflow component imports the provider at start-up.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
