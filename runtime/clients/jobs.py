"""A client for the control plane's jobs API, /api/v1/ (what `flowctl jobs ...` calls)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from runtime.clients.errors import PlaneError
from runtime.clients.plane import PlaneClient, error_message
from runtime.clients.store_errors import store_refusal

FOLLOW_READ_TIMEOUT = 60.0  # the plane sends a keep-alive comment every 15 s while a log is quiet


def _q(part: str) -> str:
    return quote(part, safe="")


class JobsClient(PlaneClient):
    """Jobs, runs and logs of one control plane; `with JobsClient(url, token=...)`.

    `tenant`: the tenant the admin key acts in (a tenant key always acts in its own).
    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    def __init__(self, base_url: str, *, token: str | None = None, tenant: str | None = None, **kw: Any):
        super().__init__(base_url, token=token, **kw)
        self.tenant = tenant

    def _scope(self, **more: str | None) -> dict[str, str]:
        params = {"tenant": self.tenant, **more}
        return {k: v for k, v in params.items() if v is not None}

    def apply(self, files: list[dict[str, str]], *, dry_run: bool = False) -> dict[str, Any]:
        """Apply definition files ({"name", "text"}) whole; the changes (only shown with `dry_run`)."""
        return self._json("POST", "/api/v1/jobs/apply", json_body={"files": files, "dry_run": dry_run},
                          params=self._scope())

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs (of the tenant)."""
        return self._json("GET", "/api/v1/jobs", params=self._scope())["jobs"]

    def job(self, name: str) -> dict[str, Any]:
        """One job with its definition."""
        return self._json("GET", f"/api/v1/jobs/{_q(name)}", params=self._scope())

    def delete(self, name: str) -> None:
        """Remove a job."""
        self._json("DELETE", f"/api/v1/jobs/{_q(name)}", params=self._scope())

    def set_suspended(self, name: str, suspended: bool) -> dict[str, Any]:
        """Suspend or resume a job; the job."""
        action = "suspend" if suspended else "resume"
        return self._json("POST", f"/api/v1/jobs/{_q(name)}/{action}", params=self._scope())

    def trigger(self, name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a run now; {"run_id", "run"}."""
        return self._json("POST", f"/api/v1/jobs/{_q(name)}/trigger", json_body={"parameters": parameters or {}},
                          params=self._scope())

    def runs(self, *, job: str | None = None, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Runs, newest first."""
        params = self._scope(job=job, state=state, limit=str(limit))
        if job is None and self.tenant is None:
            params.pop("tenant", None)
        return self._json("GET", "/api/v1/runs", params=params)["runs"]

    def run(self, run_id: str) -> dict[str, Any]:
        """A run with its steps and attempts."""
        return self._json("GET", f"/api/v1/runs/{_q(run_id)}")

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; the run (cancelled, or still stopping)."""
        return self._json("POST", f"/api/v1/runs/{_q(run_id)}/cancel")

    def logs(self, run_id: str, *, step: str | None = None, attempt: int | None = None) -> str:
        """The logs of a run's attempts (of one step, one attempt), as text."""
        return self._text(f"/api/v1/runs/{_q(run_id)}/logs", _params(step, attempt))

    def follow(self, run_id: str, *, step: str | None = None,
               attempt: int | None = None) -> Iterator[tuple[str, str]]:
        """(event, data) of a run's log stream until the run ends: "attempt" (JSON), "line", "end" (JSON)."""
        params = {**_params(step, attempt), "follow": "true"}
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connect()
            assert conn.sock is not None
            conn.sock.settimeout(FOLLOW_READ_TIMEOUT)
            conn.request("GET", f"{self._prefix}/api/v1/runs/{_q(run_id)}/logs?{urlencode(params)}",
                         headers={**self._headers, "Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status >= 400:
                raise PlaneError(f"{error_message(response.status, response.reason, response.read())} "
                                 f"(HTTP {response.status})", status=response.status)
            event = "line"
            while True:
                raw = response.readline()
                if not raw:
                    raise PlaneError("the control plane closed the log stream before the run ended")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    yield event, line[6:]
                    if event == "end":
                        return
                    event = "line"
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        finally:
            if conn is not None:
                conn.close()

    def artifacts(self, run_id: str, *, step: str | None = None, attempt: int | None = None) -> list[dict[str, Any]]:
        """A run's artifacts (of one step, one attempt): path, sha256, size, attempt, shard, node."""
        return self._json("GET", f"/api/v1/runs/{_q(run_id)}/artifacts", params=_params(step, attempt))["artifacts"]

    def download_artifact(self, artifact: dict[str, Any], into: Path) -> Path:
        """Download one listed artifact to `into`/STEP/PATH, checked against its SHA-256 and size, and
        moved into place only then (a partial or wrong file never appears there); the file's path."""
        rel = f"{_safe(str(artifact['step']))}/{_safe(str(artifact['path']))}"
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.part-{os.getpid()}")
        url = (f"{self._prefix}/api/v1/runs/{_q(artifact['run_id'])}/artifacts/{_q(artifact['step'])}/"
               f"{quote(artifact['path'])}?{urlencode({'attempt': artifact['attempt']})}")
        digest, size = hashlib.sha256(), 0
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connect()
            conn.request("GET", url, headers=self._headers)
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                # The plane's blobs are in S3: fetch from there, without the plane's Authorization.
                location = str(response.getheader("Location"))
                response.read()
                conn.close()
                conn, response = self._from_store(location)
                if response.status >= 400:
                    raise PlaneError(f"artifact {rel!r}: {store_refusal(response.status, response.read().decode(errors='replace'))}",
                                     status=response.status)
            if response.status >= 400:
                raise PlaneError(f"{error_message(response.status, response.reason, response.read())} "
                                 f"(HTTP {response.status})", status=response.status)
            with open(temp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != artifact["sha256"] or size != artifact["size"]:
                raise PlaneError(f"artifact {rel!r} arrived as {size} bytes with SHA-256 {digest.hexdigest()[:16]}..., "
                                 f"not the listed {artifact['size']} bytes {str(artifact['sha256'])[:16]}...")
            os.replace(temp, target)
        except http.client.HTTPException as exc:
            raise self._unreachable(exc) from None
        except OSError as exc:  # the connection, or writing under `into`
            raise PlaneError(f"cannot download artifact {rel!r} to {into}: {exc}") from None
        finally:
            temp.unlink(missing_ok=True)
            if conn is not None:
                conn.close()
        return target

    def _from_store(self, location: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """GET a presigned URL the plane redirected to: no credentials of ours, TLS verified."""
        import ssl
        from urllib.parse import urlsplit

        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PlaneError("the plane redirected the download to something that is not an http(s) URL")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        return conn, conn.getresponse()

    def _text(self, path: str, params: dict[str, str]) -> str:
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connect()
            conn.request("GET", f"{self._prefix}{path}?{urlencode(params)}", headers={**self._headers,
                                                                                     "Accept": "text/plain"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        finally:
            if conn is not None:
                conn.close()
        if response.status >= 400:
            raise PlaneError(f"{error_message(response.status, response.reason, data)} (HTTP {response.status})",
                             status=response.status)
        return data.decode("utf-8", "replace")


def _safe(path: str) -> str:
    """`path` if it is a plain relative path; a hostile plane's `../x` or `/etc/x` is refused."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path or \
            any(part in ("", ".", "..") for part in path.split("/")):
        raise PlaneError(f"the control plane listed an unsafe artifact name {path[:200]!r}")
    return path


def _params(step: str | None, attempt: int | None) -> dict[str, str]:
    out = {}
    if step is not None:
        out["step"] = step
    if attempt is not None:
        out["attempt"] = str(attempt)
    return out


def parse_event(data: str) -> Any:
    """An "attempt" or "end" event's JSON."""
    return json.loads(data)
