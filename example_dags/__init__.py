"""Example DAGs for airflow-provider-openai-batch (also the DAGS_FOLDER of ``make demo`` and the e2e tests).

Every example reads these environment variables at parse time:

``OPENAI_BATCH_POLL_INTERVAL``
    seconds between status polls while waiting for a batch (default 60; the demo and the e2e tests use
    a fraction of a second against the local emulator).
``OPENAI_BATCH_EXAMPLES_DIR``
    where the examples write their input files and download results (default
    ``<system temp dir>/openai-batch-examples``), one sub-folder per DAG and run.
``OPENAI_BATCH_EXAMPLES_CHAT_MODEL`` / ``OPENAI_BATCH_EXAMPLES_EMBEDDING_MODEL``
    the models used (default ``gpt-4o-mini`` / ``text-embedding-3-small``).
``OPENAI_BATCH_EXAMPLES_EMULATOR``
    set to ``1`` when ``openai_default`` points at the local emulator; only the cancel example reads it
    (to create a batch that stays running until cancelled).
"""
