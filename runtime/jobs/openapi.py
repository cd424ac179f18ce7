"""The jobs API's part of the plane's OpenAPI description (runtime/jobs/routes.py serves it)."""

from __future__ import annotations

from typing import Any

from runtime.api.openapi import Part

_ERR = {"$ref": "#/components/schemas/Error"}
_OBJ = {"type": "object"}
_KEYS: list[dict[str, list[str]]] = [{"adminKey": []}, {"bearer": []}]
_TENANT = {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "the admin key's tenant to act in (default: default); a tenant key's is its own"}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "job name"}
_RUN = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_STEP_Q = {"name": "step", "in": "query", "required": False, "schema": {"type": "string"}}
_ATTEMPT_Q = {"name": "attempt", "in": "query", "required": False, "schema": {"type": "integer"}}
SCHEMAS: dict[str, Any] = {
    "JobDefinition": {"type": "object", "description": "a job definition as JSON (docs/jobs.md: the same keys "
                                                       "as the TOML/YAML files)",
                      "required": ["trigger", "steps"], "additionalProperties": True},
    "Job": {"type": "object", "properties": {
        "tenant": {"type": "string"}, "name": {"type": "string"}, "job_id": {"type": "string"},
        "trigger": {"type": "string"}, "steps": {"type": "array", "items": {"type": "string"}},
        "suspended": {"type": "boolean"}, "version": {"type": "integer"},
        "next_fire": {"type": "integer", "nullable": True}, "definition": _OBJ}},
    "Run": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "tenant": {"type": "string"}, "job_name": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "running", "succeeded", "failed", "timed_out",
                                             "cancelled", "skipped"]},
        "reason": {"type": "string"}, "cause": {"type": "string"}, "params": _OBJ,
        "fire_time": {"type": "integer", "nullable": True}, "due_at": {"type": "number"},
        "steps": {"type": "array", "items": _OBJ, "description": "in a run's detail: each step with its attempts"}}},
    "Artifact": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "step": {"type": "string"}, "attempt": {"type": "integer"},
        "path": {"type": "string", "description": "relative; shard-K/... for a broadcast step's shard K"},
        "sha256": {"type": "string"}, "size": {"type": "integer"}, "shard": {"type": "integer", "nullable": True},
        "node": {"type": "string", "nullable": True}, "created_at": {"type": "number"}}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, ok: str, schema: dict[str, Any] | None = None, *, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, errors: tuple[str, ...] = ("401", "404"), status: str = "200",
        security: list[Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": ok, **({"content": _json(schema)} if schema else {})}}
    for code in errors:
        responses[code] = {"description": {"400": "bad input, naming the field", "401": "no valid key", "403": "needs the admin key",
                                           "404": "no such job or run (or another tenant's)",
                                           "409": "the state does not allow it", "503": "not configured"}[code],
                           "content": _json(_ERR)}
    op: dict[str, Any] = {"summary": summary, "responses": responses, "security": _KEYS if security is None else security}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


_JOB = {"$ref": "#/components/schemas/Job"}
_RUN_REF = {"$ref": "#/components/schemas/Run"}
_DEF = {"$ref": "#/components/schemas/JobDefinition"}
_CHANGED = {"type": "object", "properties": {"change": {"type": "string"}, "job": _JOB}}

PATHS: dict[str, Any] = {
    "/api/v1/jobs": {
        "get": _op("List jobs", "jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": _JOB}}},
                   params=[_TENANT], errors=("401",)),
        "post": _op("Create a job from a JSON definition", "created", _CHANGED, params=[_TENANT], body=_DEF,
                    errors=("400", "401", "403", "409"), status="201")},
    "/api/v1/jobs/apply": {
        "post": _op("Apply TOML/YAML definition files whole (or only show the diff with dry_run)", "the changes",
                    {"type": "object", "properties": {"dry_run": {"type": "boolean"}, "changes": {
                        "type": "array", "items": _OBJ}}},
                    params=[{"name": "dry_run", "in": "query", "required": False, "schema": {"type": "boolean"}}],
                    body={"type": "object", "required": ["files"], "properties": {
                        "dry_run": {"type": "boolean"},
                        "files": {"type": "array", "items": {"type": "object", "required": ["name", "text"],
                                                             "properties": {"name": {"type": "string"},
                                                                            "text": {"type": "string"}}}}}},
                    errors=("400", "401", "403"))},
    "/api/v1/jobs/{name}": {
        "get": _op("A job with its definition", "the job", _JOB, params=[_NAME, _TENANT]),
        "put": _op("Create or update a job (hot reload: running runs keep their definition)", "updated",
                   _CHANGED, params=[_NAME, _TENANT], body=_DEF, errors=("400", "401", "403")),
        "delete": _op("Remove a job; runs that started finish", "deleted", _OBJ, params=[_NAME, _TENANT])},
    "/api/v1/jobs/{name}/suspend": {
        "post": _op("Suspend a job (its pending runs are skipped)", "the job", _JOB, params=[_NAME, _TENANT])},
    "/api/v1/jobs/{name}/resume": {
        "post": _op("Resume a job (fires missed meanwhile do not run)", "the job", _JOB, params=[_NAME, _TENANT])},
    "/api/v1/jobs/{name}/trigger": {
        "post": _op("Start a run now with parameter overrides", "the run, pending",
                    {"type": "object", "properties": {"run_id": {"type": "string"}, "run": _RUN_REF}},
                    params=[_NAME, _TENANT], body={"type": "object", "properties": {"parameters": _OBJ}},
                    errors=("400", "401", "404"), status="202")},
    "/api/v1/runs": {
        "get": _op("List runs, newest first", "runs",
                   {"type": "object", "properties": {"runs": {"type": "array", "items": _RUN_REF}}},
                   params=[_TENANT, {"name": "job", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "state", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "comma-separated states"},
                           {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}}],
                   errors=("400", "401"))},
    "/api/v1/runs/{run_id}": {
        "get": _op("A run with its steps, their attempts, artifacts and broadcast shards", "the run", _RUN_REF,
                   params=[_RUN])},
    "/api/v1/runs/{run_id}/cancel": {
        "post": _op("Cancel a pending or running run (its processes are stopped)", "the run, cancelled",
                    _RUN_REF, params=[_RUN], errors=("401", "404", "409"))},
    "/api/v1/runs/{run_id}/logs": {
        "get": {**_op("Step attempt logs; follow=true streams them as server-sent events until the run ends",
                      "text/plain, or text/event-stream with follow", None, params=[
                          _RUN, {"name": "step", "in": "query", "required": False, "schema": {"type": "string"}},
                          {"name": "attempt", "in": "query", "required": False, "schema": {"type": "integer"}},
                          {"name": "follow", "in": "query", "required": False, "schema": {"type": "boolean"}}])}},
    "/api/v1/runs/{run_id}/artifacts": {
        "get": _op("A run's step artifacts (the files its commands left under $FLOWCTL_OUTPUT_DIR)", "artifacts",
                   {"type": "object", "properties": {"run_id": {"type": "string"}, "artifacts": {
                       "type": "array", "items": {"$ref": "#/components/schemas/Artifact"}}}},
                   params=[_RUN, _STEP_Q, _ATTEMPT_Q], errors=("400", "401", "404"))},
    "/api/v1/runs/{run_id}/artifacts/{step}/{path}": {
        "get": _op("One artifact's bytes (Range, ETag = its SHA-256): the step's latest succeeded attempt's, "
                   "or ?attempt=; with the hub's blobs in S3 (--blobs s3://...) a 307 to a presigned URL "
                   "instead, to follow without this plane's Authorization",
                   "application/octet-stream (206 for a Range)", None,
                   params=[_RUN, {"name": "step", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "relative, '/'-separated; '..', '.' and empty parts are refused (400)"},
                           _ATTEMPT_Q], errors=("400", "401", "404"))},
    "/api/v1/hooks/{tenant}/{name}": {
        "post": _op("A webhook-triggered job's call, signed: X-Flowctl-Timestamp and X-Flowctl-Signature "
                    "(sha256= HMAC over TIMESTAMP.BODY); a JSON body's \"parameters\" override the defaults",
                    "the run started", {"type": "object", "properties": {"run_id": {"type": "string"}}},
                    params=[{"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"}}, _NAME],
                    errors=("401", "404", "409", "503"), status="202", security=[])},
}


_NODE_KEY: list[dict[str, list[str]]] = [{"bearer": []}]
_WHERE = [{"name": n, "in": "query", "required": n != "shard", "schema": {"type": t}}
          for n, t in (("run_id", "string"), ("step", "string"), ("attempt", "integer"), ("shard", "integer"))]
# With the scheduler role: steps run on nodes, which upload their artifacts here; broadcast shards.
NODE_PATHS: dict[str, Any] = {
    "/api/v1/runs/{run_id}/shards": {
        "get": _op("A broadcast run's shards: index, total, node, state, reason", "shards",
                   {"type": "object", "properties": {"run_id": {"type": "string"}, "shards": {
                       "type": "array", "items": _OBJ}}}, params=[_RUN, _STEP_Q])},
    "/api/cluster/jobs/blobs/{sha256}": {
        "put": _op("A node uploads one artifact's bytes (its credential; an attempt it runs now)", "stored",
                   _OBJ, params=[{"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}},
                                 *_WHERE], errors=("400", "401", "409"), status="201", security=_NODE_KEY)},
    "/api/cluster/jobs/artifacts": {
        "post": _op("A node records an attempt's uploaded artifacts, all or none (413 over the limits)",
                    "recorded", _OBJ, body={"type": "object", "required": ["run_id", "step", "attempt", "files"],
                                            "properties": {"files": {"type": "array", "items": _OBJ}}},
                    errors=("400", "401", "409"), status="201", security=_NODE_KEY)},
}


def part(*, nodes: bool = True) -> Part:
    """The jobs role's routes, for runtime/plane_openapi.py; `nodes`: with the scheduler role here."""
    return Part("jobs", "Seed 004's jobs: definitions, runs, logs, artifacts and webhooks (the admin key or a "
                "tenant key).", {**PATHS, **(NODE_PATHS if nodes else {})}, SCHEMAS)
