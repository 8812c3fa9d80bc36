"""The AsyncAPI validator of the tests (scripts/asyncapi/validate.mjs, the AsyncAPI project's
@asyncapi/parser) passes a valid AsyncAPI 3.0.0 document and fails broken ones with the right
diagnostic; the Python helper (tests/asyncapi_check.py) reports them readably."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import asyncapi_check
import pytest
from asyncapi_check import (
    ERROR,
    WARNING,
    AsyncAPIToolMissing,
    assert_valid_asyncapi,
    asyncapi_diagnostics,
    describe,
    errors,
)

VALID: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "Orders", "version": "1.0.0"},
    "servers": {"kafka": {"host": "localhost:9092", "protocol": "kafka"}},
    "channels": {
        "orderCreated": {
            "address": "order.created",
            "messages": {
                "orderCreated": {
                    "payload": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                        "required": ["order_id", "qty"],
                    }
                }
            },
        }
    },
    "operations": {"onOrderCreated": {"action": "receive", "channel": {"$ref": "#/channels/orderCreated"}}},
}

VALID_YAML = """\
asyncapi: 3.0.0
info:
  title: Orders
  version: 1.0.0
servers:
  kafka:
    host: localhost:9092
    protocol: kafka
channels:
  orderCreated:
    address: order.created
    messages:
      orderCreated:
        payload:
          type: object
          properties:
            order_id: {type: string}
          required: [order_id]
operations:
  onOrderCreated:
    action: receive
    channel:
      $ref: '#/channels/orderCreated'
"""


def variant(**changes: Any) -> dict[str, Any]:
    """A deep copy of VALID with ``changes`` applied: ``{"a.b.c": value}``, ``None`` deletes."""
    doc = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return doc


def only_error(document: dict[str, Any] | str | Path) -> dict[str, Any]:
    found = errors(asyncapi_diagnostics(document))
    assert len(found) == 1, [describe(d) for d in found]
    return found[0]


def test_a_valid_document_passes_as_a_dict_and_as_yaml_text() -> None:
    for document in (VALID, VALID_YAML):
        diagnostics = assert_valid_asyncapi(document)
        assert errors(diagnostics) == []
        # every diagnostic has the documented shape
        for d in diagnostics:
            assert set(d) >= {"severity", "code", "message", "path"}
            assert d["severity"] in (0, 1, 2, 3) and isinstance(d["path"], list)


def test_an_operation_whose_channel_ref_points_nowhere_fails() -> None:
    broken = variant(**{"operations.onOrderCreated.channel": {"$ref": "#/channels/nowhere"}})
    error = only_error(broken)
    assert error["code"] == "invalid-ref"
    assert error["path"] == ["operations", "onOrderCreated", "channel", "$ref"]
    assert "#/channels/nowhere" in error["message"]
    with pytest.raises(AssertionError) as failed:
        assert_valid_asyncapi(broken)
    text = str(failed.value)
    assert "1 AsyncAPI error(s):" in text
    assert "error invalid-ref at operations.onOrderCreated.channel.$ref (line " in text
    assert "'#/channels/nowhere' does not exist" in text


def test_an_unknown_asyncapi_version_fails() -> None:
    error = only_error(variant(asyncapi="3.9.0"))
    assert error["code"] == "asyncapi-is-asyncapi"
    assert 'Version "3.9.0" is not supported' in error["message"]


@pytest.mark.parametrize(
    ("missing", "path", "field"),
    [
        ("info.version", ["info"], "version"),
        ("operations.onOrderCreated.action", ["operations", "onOrderCreated"], "action"),
    ],
)
def test_a_missing_required_field_fails(missing: str, path: list[str], field: str) -> None:
    error = only_error(variant(**{missing: None}))
    assert error["code"] == "asyncapi-document-resolved"
    assert error["path"] == path
    assert f'must have required property "{field}"' in error["message"]


def test_a_payload_schema_of_the_wrong_type_fails() -> None:
    qty = "channels.orderCreated.messages.orderCreated.payload.properties.qty"
    found = errors(asyncapi_diagnostics(variant(**{f"{qty}.minimum": "one"})))
    assert {"code": "asyncapi-document-resolved", "path": [*qty.split("."), "minimum"]} in [
        {"code": d["code"], "path": d["path"]} for d in found
    ], [describe(d) for d in found]
    assert any(d["message"] == '"minimum" property type must be number' for d in found)


def test_yaml_that_does_not_parse_fails() -> None:
    found = errors(asyncapi_diagnostics("asyncapi: 3.0.0\ninfo: [\n"))
    assert "parser" in [d["code"] for d in found], [describe(d) for d in found]


def test_warnings_are_reported_but_do_not_fail() -> None:
    # the parser's spectral "recommended" rules (AsyncAPI 2.x documents) give warnings only
    diagnostics = assert_valid_asyncapi(
        {"asyncapi": "2.6.0", "info": {"title": "Orders", "version": "1.0.0"}, "channels": {}}
    )
    warnings = {d["code"] for d in diagnostics if d["severity"] == WARNING}
    assert {"asyncapi-id", "asyncapi-info-description", "asyncapi-servers"} <= warnings
    assert all(d["severity"] != ERROR for d in diagnostics)


def test_a_file_path_is_validated_with_its_relative_refs(tmp_path: Path) -> None:
    payload = VALID["channels"]["orderCreated"]["messages"]["orderCreated"]["payload"]
    (tmp_path / "order.json").write_text(json.dumps(payload))
    document = variant(**{"channels.orderCreated.messages.orderCreated.payload": {"$ref": "./order.json"}})
    (tmp_path / "asyncapi.json").write_text(json.dumps(document))
    assert_valid_asyncapi(tmp_path / "asyncapi.json")
    (tmp_path / "order.json").unlink()
    error = only_error(tmp_path / "asyncapi.json")
    assert error["code"] == "invalid-ref"


def test_the_command_line_exit_status_and_stdin(tmp_path: Path) -> None:
    node = asyncapi_check._node()
    validate = str(asyncapi_check.VALIDATOR_DIR / "validate.mjs")
    (tmp_path / "valid.yaml").write_text(VALID_YAML)
    ok = subprocess.run([node, validate, str(tmp_path / "valid.yaml")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert [d for d in json.loads(ok.stdout) if d["severity"] == ERROR] == []

    broken = VALID_YAML.replace("#/channels/orderCreated", "#/channels/nowhere")
    bad = subprocess.run([node, validate, "-"], input=broken, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stderr
    assert [d["code"] for d in json.loads(bad.stdout) if d["severity"] == ERROR] == ["invalid-ref"]

    for args in ([], ["a.yaml", "b.yaml"], ["--help"], [str(tmp_path / "absent.yaml")]):
        usage = subprocess.run([node, validate, *args], capture_output=True, text=True, timeout=120)
        assert usage.returncode == 2, (args, usage.stdout, usage.stderr)
        assert usage.stdout == "" and usage.stderr.strip()


def test_missing_node_or_packages_raise_naming_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(asyncapi_check, "VALIDATOR_DIR", tmp_path)  # a folder without node_modules
    with pytest.raises(AsyncAPIToolMissing, match=r"@asyncapi/parser is not installed .*scripts/test"):
        asyncapi_diagnostics(VALID)
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on PATH
    with pytest.raises(AsyncAPIToolMissing, match=r"node is not installed.*scripts/test"):
        assert_valid_asyncapi(VALID)
