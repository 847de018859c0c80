"""Schema-driven fuzzing of the REST API against a real server (schemathesis).

Thousands of generated requests, valid and invalid, with good and wrong credentials: no 5xx,
no hang, every response as documented (status, content type, body schema), no crash.
`TEST_FUZZ_EXAMPLES` sets the examples per operation (default 25).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from squall.controller.openapi import openapi_document
from tests.conftest import (
    FUZZ_DERANDOMIZE,
    FUZZ_EXAMPLES,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    served,
)

EXAMPLES = FUZZ_EXAMPLES
WRONG_KEY = (GUEST_UUID, "w" * 64)
# "Schema-valid data must be accepted" needs schemas that are exact validators; ours describe
# (an action's kind depends on the runtimes installed, its code on the kind), so a valid-looking
# body may rightly get 400. Every other check runs, including that invalid data is refused.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Schemathesis probes every operation with wrong credentials: a budget for all of them.
    env = {"SQUALL_LIMITS_AUTH_FAILURE_BURST": "100000"}
    with served(tmp_path_factory, "fuzz", env) as server:
        yield server
    assert server.process.returncode == 0, "the fuzzed server did not stop cleanly"
    assert "Traceback" not in server.output(), server.output()[-3000:]


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=FUZZ_DERANDOMIZE,
    print_blob=True,
)


def fuzz(server: ServerProcess, auth: tuple[str, str], mode: GenerationMode) -> list[str]:
    """Run every operation's generated cases; returns one line per failing operation."""
    failures = []
    header = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
    schema = schemathesis.openapi.from_dict(openapi_document())
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @FUZZ_SETTINGS
        def run(case: Case) -> None:
            # Our credentials replace generated ones; a case that drops them on purpose (to
            # check they are required) is sent without.
            sent = header if "Authorization" in (case.headers or {}) else {}
            response = case.call(base_url=server.url, headers=sent, timeout=30)
            assert response.status_code not in (500, 501, 504), response.text
            case.validate_response(response, excluded_checks=EXCLUDED)

        try:
            run()
        except Unsatisfiable:
            continue  # negative mode: an operation without inputs has no invalid request
        except (Exception, BaseExceptionGroup) as exc:  # collect all, then report them together
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    return failures


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_with_good_credentials(fuzzed: ServerProcess, mode: GenerationMode) -> None:
    failures = fuzz(fuzzed, (GUEST_UUID, GUEST_KEY), mode)
    assert not failures, "\n\n".join(failures)


def test_with_wrong_credentials(fuzzed: ServerProcess) -> None:
    failures = fuzz(fuzzed, WRONG_KEY, GenerationMode.POSITIVE)
    assert not failures, "\n\n".join(failures)


def test_the_server_is_healthy_after_fuzzing(fuzzed: ServerProcess) -> None:
    assert httpx.get(fuzzed.url + "/readyz", timeout=5).status_code == 200
    with httpx.Client(base_url=fuzzed.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
        code = {"exec": {"kind": "python:3", "code": "def main(a):\n    return {'ok': 1}\n"}}
        assert api.put("/api/v1/namespaces/_/actions/after-fuzz?overwrite=true", json=code)
        done = api.post("/api/v1/namespaces/_/actions/after-fuzz?blocking=true&result=true")
        assert done.status_code == 200 and done.json() == {"ok": 1}
