"""Tests of the batch_input package as a whole: standard library only, public imports."""

from __future__ import annotations

import subprocess
import sys


def test_package_imports_only_the_standard_library() -> None:
    code = (
        "import sys, airflow_provider_openai_batch.batch_input; "
        "bad = [m for m in ('airflow', 'requests', 'urllib3') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Every name the single-module batch_input.py exported, importable from the package as before.
_NAMES_BEFORE_THE_SPLIT = (
    "CHAT_COMPLETIONS EMBEDDINGS MAX_INPUT_BYTES MAX_REQUESTS RESPONSES BatchRequest BatchResult InputSummary "
    "build_chat_requests build_embedding_requests build_responses_requests iter_results iter_results_file "
    "normalize_endpoint read_results validate_batch_input write_batch_input"
)
PUBLIC_BEFORE_THE_SPLIT = _NAMES_BEFORE_THE_SPLIT.split()


def test_public_imports_are_kept() -> None:
    from airflow_provider_openai_batch import batch_input

    assert set(PUBLIC_BEFORE_THE_SPLIT) <= set(batch_input.__all__)
    for name in batch_input.__all__:
        assert getattr(batch_input, name) is not None, name
    assert batch_input.MAX_REQUESTS == 50_000 and batch_input.MAX_INPUT_BYTES == 200 * 1024 * 1024
