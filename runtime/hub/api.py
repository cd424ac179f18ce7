"""The catalog as JSON: services, models, checksums, the usage ranking, health (seed shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from quart import Response, request

from hub_store import Catalog, ModelRecord, ServiceRecord, VersionRecord, ids
from runtime.api import ApiError, json_response
from runtime.hub.downloads import resolve
from runtime.hub.modelfiles import model_files
from runtime.hub.seedzip import with_zip
from runtime.hub.state import HubState


def version_json(v: VersionRecord, *, detail: bool = False, models: Sequence[ModelRecord] = ()) -> dict[str, Any]:
    """One version as the seed shows it (plus yanked, signed and the bundle's digest).

    `sha256`/`size_bytes` are the seed's: those of the .zip its clients download (see
    runtime/hub/seedzip.py; `v` must come from `with_zip`); `bundle_sha256`/`bundle_size_bytes`
    are the .fbundle's, what flowctl verifies.
    """
    data: dict[str, Any] = {"version": v.version, "size_bytes": v.zip_size, "created_at": v.created_at,
                            "stable": v.stable, "yanked": v.yanked, "sha256": v.zip_sha256,
                            "bundle_sha256": v.sha256, "bundle_size_bytes": v.size_bytes}
    if detail:
        data.update(published_at=v.published_at, signed=v.signed, signer=v.signer,
                    unpacked_size=v.unpacked_size, file_count=v.file_count,
                    models=[{"model_id": m.model_id, "model_type": m.model_type,
                             "version": m.model_version} for m in models])
    return data


async def _zipped(state: HubState, s: ServiceRecord) -> ServiceRecord:
    return replace(s, versions=tuple([await with_zip(state, v) for v in s.versions]))


def service_summary(s: ServiceRecord) -> dict[str, Any]:
    """The `GET /api/services` item (`s` from `_zipped`)."""
    return {"service_id": s.service_id, "service_name": s.service_name, "service_type": s.service_type,
            "latest_version": s.latest, "versions": [version_json(v) for v in s.versions]}


def service_detail(catalog: Catalog, s: ServiceRecord) -> dict[str, Any]:
    """The `GET /api/services/{id}` body (`s` from `_zipped`)."""
    return {"service_id": s.service_id, "service_name": s.service_name, "service_type": s.service_type,
            "port": s.port, "description": s.description, "latest_version": s.latest,
            "versions": [version_json(v, detail=True, models=catalog.models_of(s.service_id, v.version))
                         for v in s.versions]}


def _model_files(catalog: Catalog, m: ModelRecord) -> list[dict[str, Any]]:
    return [{"path": rel, "size": f.size, "sha256": f.sha256,
             "url": f"/storage/models/{m.model_id}/{m.model_version}/{rel}"}
            for rel, f in model_files(catalog, m)]


def model_json(catalog: Catalog, model_id: str, *, detail: bool) -> dict[str, Any]:
    """A model with the versions that provide it (files listed in the detail form)."""
    pairs = catalog.model_versions(model_id)
    if not pairs:
        from hub_store import NotFound

        raise NotFound(f"model {model_id!r} is not published")
    latest = next((m.model_version for m, v in pairs if v.stable and not v.yanked), None)
    versions = []
    for m, v in pairs:
        item: dict[str, Any] = {"version": m.model_version, "service_id": m.service_id,
                                "service_version": v.version, "stable": v.stable, "yanked": v.yanked,
                                "created_at": v.created_at}
        if detail:
            files = _model_files(catalog, m)
            item.update(files=files, size_bytes=sum(f["size"] for f in files),
                        checksum_url=f"/storage/models/{model_id}/{m.model_version}/checksum.sha256")
        versions.append(item)
    return {"model_id": model_id, "model_type": pairs[0][0].model_type, "latest_version": latest,
            "versions": versions}


def register(app, state: HubState) -> None:
    """Attach the JSON routes to `app`."""
    catalog = state.data.catalog

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok", "role": "hub"})

    @app.get("/api/services")
    async def services() -> Response:
        records = await state.run(catalog.services)
        return json_response([service_summary(await _zipped(state, s)) for s in records])

    @app.get("/api/services/<service_id>")
    async def service(service_id: str) -> Response:
        record = await _zipped(state, await state.run(catalog.service, ids.service_id(service_id)))
        return json_response(await state.run(service_detail, catalog, record))

    @app.get("/api/services/<service_id>/<version>")
    async def version(service_id: str, version: str) -> Response:
        record = await with_zip(state, await resolve(state, service_id, version))
        models = await state.run(catalog.models_of, record.service_id, record.version)
        files = await state.run(catalog.files, record.service_id, record.version)
        data = {"service_id": record.service_id, **version_json(record, detail=True, models=models),
                "files": [{"path": f.path, "size": f.size, "mode": f.mode, "sha256": f.sha256}
                          for f in files]}
        return json_response(data, headers={"X-Flowctl-Version": record.version})

    @app.get("/api/services/<service_id>/<version>/checksum")
    async def checksum(service_id: str, version: str) -> Response:
        # The seed's client checks the .zip it downloads against sha256/size_bytes.
        record = await with_zip(state, await resolve(state, service_id, version))
        return json_response({"service_id": record.service_id, "version": record.version,
                              "sha256": record.zip_sha256, "size_bytes": record.zip_size,
                              "url": f"/storage/services/{record.service_id}/{record.version}.zip",
                              "bundle_sha256": record.sha256, "bundle_size_bytes": record.size_bytes},
                             headers={"X-Flowctl-Version": record.version})

    @app.get("/api/models")
    async def models() -> Response:
        def listing() -> list[dict[str, Any]]:
            return [model_json(catalog, m, detail=False) for m in catalog.model_ids()]

        return json_response(await state.run(listing))

    @app.get("/api/models/<model_id>")
    async def model(model_id: str) -> Response:
        return json_response(await state.run(model_json, catalog, ids.model_id(model_id), detail=True))

    @app.get("/api/model-usage/ranking")
    async def ranking() -> Response:
        raw = request.args.get("limit", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ApiError(400, f"limit must be an integer in 1..1000, not {raw!r}")
        rows = await state.run(catalog.ranking, int(raw))
        return json_response([{"rank": i + 1, "model_id": m, "downloads": n, "last_download_at": at}
                              for i, (m, n, at) in enumerate(rows)])
