"""Benchmark suite: this provider side by side with ``apache-airflow-providers-openai``.

Run it with ``make bench`` (or ``python -m benchmarks.run`` in the bench environment). See ``RESULTS.md``.
"""
