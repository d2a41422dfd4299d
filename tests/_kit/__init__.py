"""Helpers shared by the test folders, imported as ``from tests._kit.<module> import ...``.

pytest's ``pythonpath = ["."]`` (pyproject) puts the repository root on ``sys.path``; no conftest edits it.

- :mod:`~tests._kit.airflow_compat`: Airflow names whose import path moved between 3.1 and 3.3.
- :mod:`~tests._kit.connection`: an ``AIRFLOW_CONN_*`` pointing at the emulator (or any base URL).
- :mod:`~tests._kit.ti`: the one fake task instance and an ``execute`` context holding it.
- :mod:`~tests._kit.batches`: request lines and batches in a running emulator (operators, sensors, triggers).
- :mod:`~tests._kit.reliability`: the reliability suite's registry and bounded calls.
- :mod:`~tests._kit.http_server`: API payloads and a tiny threaded HTTP server (hook tests).
- :mod:`~tests._kit.inputs`, :mod:`~tests._kit.job_lines`: input and result lines (batch_input, job tests).
- :mod:`~tests._kit.emulator_calls`, :mod:`~tests._kit.openapi_schemas`: raw calls and schemas (emulator tests).
- :mod:`~tests._kit.kill`: a trigger bound to a task instance whose state the Task SDK reports.
- :mod:`~tests._kit.memory_tracing`: the traced allocation peak of one call.
- :mod:`~tests._kit.s3`: moto's S3 server in a child process and an empty bucket on it (object storage tests).
- :mod:`~tests._kit.destinations`: owners, and writing through a job's destination as the merge does.
- :mod:`~tests._kit.e2e_stack`, :mod:`~tests._kit.readme_blocks`: the real Airflow of the e2e tests.
"""
