"""API fuzzing: schemathesis drives the real server from its own OpenAPI schema (positive and negative
cases). No server errors, and every response conforms to the schema: documented status, content type
and body shape. Bounded: a few dozen examples per operation, about 20 s in all."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 30


def test_api_has_no_server_errors_and_conforms_to_its_schema(server):
    # Driven by hand (not schemathesis' pytest plugin) so the schema can come from the live server.
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: dict[str, str] = {}
    labels = []
    calls: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:
        labels.append(operation.label)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def fuzz(case) -> None:
            response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)
            calls[response.status_code] = calls.get(response.status_code, 0) + 1

        try:
            fuzz()
        except Unsatisfiable:
            continue  # no way to break this operation's (empty) input: nothing negative to send
        except Exception as error:  # collect every operation's failure, then report them together
            failures[f"{operation.label} ({mode})"] = str(error)[:2000]
    assert any("/predict" in label for label in labels) and any("infer" in label for label in labels), labels
    print("responses by status:", dict(sorted(calls.items())))
    assert sum(calls.values()) > 150 and sum(n for s, n in calls.items() if 400 <= s < 500) > 100, calls
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert server.alive() and server.ready()
