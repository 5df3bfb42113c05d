"""The HTTP API (DESIGN.md §3.4): one ASGI app for metrics, probes, the status page and /api/v1.

The app does not know the daemon: it talks to a `Controller` (anything that can queue an
evaluation and report health), so it is tested against a real daemon and a stand-in alike.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .. import __version__
from ..pipeline import cell_document, estimate_document
from ..settings import Settings
from ..store import RunRecord, Store, is_hex_id
from ..types import ModelScore
from ._curves import cell_curves
from ._run_page import render_run_page
from ._schemas import (
    AlertOut,
    CellOut,
    EstimateOut,
    ModelOut,
    ModelScoreOut,
    Problem,
    RunModelOut,
    RunOut,
    RunQueued,
    RunSummary,
    TrialOut,
)
from ._status_page import render_status_page
from ._views import alert_documents

__all__ = ["Controller", "create_app"]


class Controller(Protocol):
    def request(self, trigger: str) -> tuple[str, bool]: ...

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def ready(self) -> tuple[bool, dict[str, Any]]: ...


def _score_out(score: ModelScore) -> ModelScoreOut:
    return ModelScoreOut(
        model=score.model,
        version=score.version,
        persistence=score.persistence,
        stderr=score.stderr,
        stderr_seeds=score.stderr_seeds,
        spread=score.spread,
        coverage=score.coverage,
        worst_cell=list(score.worst_cell) if score.worst_cell else None,
        worst_cell_score=score.worst_cell_score,
        task_scores=score.task_scores,
        dataset_scores=score.dataset_scores,
        strategy_scores=score.strategy_scores,
    )


def _summary(run: RunRecord) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        trigger=run.trigger,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        seconds=run.seconds,
        error=run.error,
        models=[_score_out(m) for m in run.models],
    )


def create_app(
    *,
    controller: Controller,
    store: Store,
    settings: Settings,
    registry: CollectorRegistry,
) -> FastAPI:
    """Build the app; no interactive docs pages (they would load scripts from a CDN)."""
    app = FastAPI(
        title="persistence-monitor",
        version=__version__,
        description="Is each deployed pre-trained model still persistent? Scores, runs and alerts.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    token = settings.server.api_token

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise HTTPException(
                status_code=403,
                detail="mutating API calls are disabled: set server.api_token (PM_SERVER__API_TOKEN) to enable them",
            )
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        # Constant-time comparison: the response time must not reveal how much of a guess matched.
        # An empty credential never matches, whatever the settings hold.
        if (
            scheme.lower() != "bearer"
            or not given
            or not hmac.compare_digest(given.encode(), token.get_secret_value().encode())
        ):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="persistence-monitor"'},
            )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["probes"], summary="liveness: the process and its scheduler are alive")
    def healthz() -> JSONResponse:
        ok, body = controller.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz", tags=["probes"], summary="readiness: configuration loaded, store reachable")
    def readyz() -> JSONResponse:
        ok, body = controller.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> HTMLResponse:
        return HTMLResponse(
            render_status_page(store, settings, controller.health()[1], alert_documents(store, settings))
        )

    @app.get("/api/v1/models", response_model=list[ModelOut], tags=["models"])
    def list_models() -> list[ModelOut]:
        """Every configured model with its latest P(M), coverage and version."""
        latest = store.latest_scores(m.name for m in settings.models)
        out = []
        for model in settings.models:
            run, score = latest.get(model.name, (None, None))
            out.append(
                ModelOut(
                    model=model.name,
                    role=model.role,
                    version=score.version if score else None,
                    persistence=score.persistence if score else None,
                    stderr=score.stderr if score else None,
                    stderr_seeds=score.stderr_seeds if score else None,
                    spread=score.spread if score else None,
                    coverage=score.coverage if score else None,
                    worst_cell=list(score.worst_cell) if score and score.worst_cell else None,
                    worst_cell_score=score.worst_cell_score if score else None,
                    run_id=run.id if run else None,
                    finished_at=run.finished_at if run else None,
                )
            )
        return out

    @app.get("/api/v1/runs", response_model=list[RunSummary], tags=["runs"])
    def list_runs(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        status: Annotated[str | None, Query(pattern="^(running|completed|partial|failed)$")] = None,
    ) -> list[RunSummary]:
        """Recent runs, newest first, with each model's scores (without cells)."""
        return [_summary(run) for run in store.list_runs(limit=limit, status=status)]

    @app.get(
        "/api/v1/runs/{run_id}", response_model=RunOut, responses={404: {"model": Problem}}, tags=["runs"]
    )
    def get_run(run_id: str) -> RunOut:
        """One run with its cells, in the shape of `run-once --json`."""
        run = store.get_run(run_id) if is_hex_id(run_id) else None
        if run is None:
            raise HTTPException(status_code=404, detail=f"no run {run_id}")
        models = []
        estimates = store.run_estimates(run.id)
        for score in run.models:
            cells = [c for c in run.cells if c.model == score.model]
            models.append(
                RunModelOut(
                    **_score_out(score).model_dump(),
                    cells=[CellOut(**cell_document(c)) for c in cells],  # as run-once --json
                    transferability=[
                        EstimateOut(**estimate_document(e)) for e in estimates if e.model == score.model
                    ],
                )
            )
        return RunOut(
            run_id=run.id,
            trigger=run.trigger,
            status=run.status,
            seconds=run.seconds,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            models=models,
        )

    def find_run(run_id: str) -> RunRecord:
        run = store.get_run(run_id) if is_hex_id(run_id) else None
        if run is None:
            raise HTTPException(status_code=404, detail=f"no run {run_id}")
        return run

    @app.get(
        "/api/v1/runs/{run_id}/trials",
        response_model=list[TrialOut],
        responses={404: {"model": Problem}},
        tags=["runs"],
    )
    def get_run_trials(run_id: str) -> list[TrialOut]:
        """Every stored trial of one run's cells (a seed each), with its loss per epoch."""
        run = find_run(run_id)
        return [
            TrialOut(
                model=c.cell.model,
                task=c.cell.task,
                dataset=c.cell.dataset,
                snapshot=c.cell.snapshot,
                strategy=c.cell.strategy,
                **seed.document(),
            )
            for c in cell_curves(store, run.cells)
            for seed in c.seeds
        ]

    @app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(run_id: str) -> HTMLResponse:
        return HTMLResponse(render_run_page(store, find_run(run_id)))

    @app.post(
        "/api/v1/runs",
        status_code=202,
        response_model=RunQueued,
        dependencies=[Depends(require_token)],
        responses={401: {"model": Problem}, 403: {"model": Problem}},
        tags=["runs"],
    )
    def trigger_run() -> RunQueued:
        """Queue an evaluation now (needs `Authorization: Bearer <server.api_token>`)."""
        run_id, joined = controller.request("api")
        return RunQueued(run_id=run_id, status="queued", joined=joined)

    @app.get("/api/v1/alerts", response_model=list[AlertOut], tags=["alerts"])
    def list_alerts() -> list[AlertOut]:
        """The state of every alert rule for every model."""
        return [AlertOut(**a) for a in alert_documents(store, settings)]

    return app
