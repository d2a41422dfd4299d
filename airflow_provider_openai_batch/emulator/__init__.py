"""Local emulator of the OpenAI Batch + Files API (standard library only; never imported by the provider).

Start it from Python::

    from airflow_provider_openai_batch.emulator import EmulatorServer, ManualClock

    with EmulatorServer(phase_seconds=0.05) as emu:
        client = OpenAI(api_key="sk-emulator", base_url=emu.base_url)

or from a shell: ``python -m airflow_provider_openai_batch.emulator --port 8787`` (see ``--help``).

Conventions (also in ``README.md`` next to this file):

* Lifecycle: ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``, each phase lasting
  ``phase_seconds`` on the server's clock; evaluated lazily whenever a batch is read. Input problems fail
  the batch at the end of ``validating``. A cancel moves a non-terminal batch to ``cancelling`` and, one
  phase later, to ``cancelled``.
* Batch ``metadata["emulator"]`` (comma-separated flags): ``hold`` = stay ``in_progress`` (at most half
  the requests done) until cancelled or the 24 h window passes; ``expire`` = go to ``expired`` at the end
  of ``in_progress`` with half the requests done; ``slow`` = every phase lasts 20x longer.
* A request line fails (400 in the error file) when ``body.model`` ends with ``-fail`` or
  ``body.emulator_fail`` is ``true``. Output bodies are deterministic (see :mod:`.results`).
* Fault injection: ``server.faults.add(route, kind, ...)`` (see :mod:`.faults`).
"""

from __future__ import annotations

from .clock import Clock, ManualClock, RealClock
from .faults import FAULT_KINDS, ROUTE_KEYS, FaultRegistry, FaultRule, parse_fault_spec
from .server import Counters, EmulatorServer
from .state import (
    BATCH_ENDPOINTS,
    CONTROL_METADATA_KEY,
    FILE_PURPOSES,
    MAX_BATCH_FILE_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_BATCH,
)

__all__ = [
    "BATCH_ENDPOINTS",
    "CONTROL_METADATA_KEY",
    "FAULT_KINDS",
    "FILE_PURPOSES",
    "MAX_BATCH_FILE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_REQUESTS_PER_BATCH",
    "ROUTE_KEYS",
    "Clock",
    "Counters",
    "EmulatorServer",
    "FaultRegistry",
    "FaultRule",
    "ManualClock",
    "RealClock",
    "parse_fault_spec",
]
