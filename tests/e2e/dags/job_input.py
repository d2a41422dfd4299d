"""What the job DAGs of the e2e suite share: the run's chat input, written into a folder of its own.

Imported by its siblings (the DAG bundle's folder is on ``sys.path`` when they are parsed and run); holds no
DAG itself.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")


def write_chat_input(context: Mapping[str, Any], **body: Any) -> dict[str, Any]:
    """Write the run's ``requests`` param of chat requests ``t0000``, ``t0001``, ... (each body with ``body``'s
    keys added) into a run-specific folder.

    :returns: the input's path, the folder (the job's destination) and the run's ``batch_metadata`` param.
    """
    run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "input.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(int(context["params"]["requests"])):
            request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Summarize ticket {i}"}]}
            line = {"custom_id": f"t{i:04d}", "method": "POST", "url": "/v1/chat/completions", "body": request | body}
            out.write(json.dumps(line) + "\n")
    return {"input_file": str(path), "run_dir": str(run_dir), "metadata": dict(context["params"]["batch_metadata"])}
