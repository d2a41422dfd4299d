"""Subpackage of airflow_provider_openai_batch."""
