"""/api/v1/training: seed 002's training sessions, each a TrainingRun of the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from aifactory.api.deps import Caller, Management, StateDep, StoreDep
from aifactory.api.errors import NotFound
from aifactory.api.training.schemas import (
    ErrorDetail, LogLine, MessageResponse, SessionInfo, SessionStatus, StartResponse, TrainingConfig,
    TrainingMetrics,
)
from aifactory.models import Hyperparameters
from aifactory.training import session_id

AUTH = {401: {"model": ErrorDetail, "description": "No API key, or an unknown, revoked or expired one"},
        403: {"model": ErrorDetail, "description": "The key's role does not allow this path"}}
NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such session (or not the caller's tenant's)"}}
CONFLICT = {409: {"model": ErrorDetail, "description": "The session is not in a state that allows this"}}

router = APIRouter(prefix="/api/v1/training", tags=["training"], dependencies=[Management], responses={**AUTH})


async def get_session(state: StateDep, store: StoreDep, caller: Caller,
                      session: Annotated[str, Path(alias="session_id", title="Session Id")]) -> dict:
    return state.trainings.get(caller, session)


SessionDep = Annotated[dict, Depends(get_session)]


@router.post("/start", response_model=StartResponse, summary="Start Training",
             responses={404: {"model": ErrorDetail, "description": "Unknown dataset or architecture"},
                        400: {"model": ErrorDetail, "description": "The body is not JSON, or Kubernetes refused "
                                                                   "what it asks for (its words)"}})
async def start_training(config: TrainingConfig, state: StateDep, store: StoreDep,  # type: ignore[valid-type]
                         caller: Caller) -> StartResponse:
    """Start a new training session: a TrainingRun that the operator runs as a Slurm job (queued first, within
    the tenant's limit of concurrent sessions)."""
    hyperparameters = Hyperparameters(**{name: getattr(config, name) for name in Hyperparameters.model_fields})
    created = await state.trainings.start(caller, config.model_architecture, config.dataset_name, hyperparameters)
    return StartResponse(session_id=session_id(created["metadata"]["name"]), status=SessionStatus.of(created).state,
                         message="Training session created and started")


@router.post("/{session_id}/stop", response_model=MessageResponse, summary="Stop Training",
             responses={**NOT_FOUND, **CONFLICT})
async def stop_training(run: SessionDep, state: StateDep, caller: Caller) -> MessageResponse:
    """Stop an active training session: its Slurm job is cancelled and it reads stopped."""
    await state.trainings.stop(caller, run)
    return MessageResponse(message=f"Training session {session_id(run['metadata']['name'])} stopped successfully")


@router.get("/sessions", response_model=list[SessionInfo], summary="List Sessions")
async def list_sessions(state: StateDep, store: StoreDep, caller: Caller) -> list[SessionInfo]:
    """Every training session of the caller's tenant, oldest first."""
    return [SessionInfo.of(obj) for obj in state.trainings.visible(caller)]


@router.get("/queue", response_model=list[SessionInfo], summary="Get Queue")
async def get_queue(state: StateDep, store: StoreDep, caller: Caller) -> list[SessionInfo]:
    """The sessions waiting to run: over the tenant's limit of concurrent sessions, or in Slurm's queue."""
    return [SessionInfo.of(obj) for obj in state.trainings.queue(caller)]


@router.delete("/queue/{session_id}", response_model=MessageResponse, summary="Cancel Queued Session",
               responses={**NOT_FOUND, **CONFLICT})
async def cancel_queued(run: SessionDep, state: StateDep, caller: Caller) -> MessageResponse:
    """Cancel a queued session (409 once it runs: stop it instead)."""
    await state.trainings.cancel_queued(caller, run)
    return MessageResponse(message=f"Queued session {session_id(run['metadata']['name'])} cancelled successfully")


@router.get("/{session_id}/status", response_model=SessionStatus, summary="Get Status", responses={**NOT_FOUND})
async def get_status(run: SessionDep) -> SessionStatus:
    """The session's state and epoch."""
    return SessionStatus.of(run)


@router.get("/{session_id}/metrics", response_model=TrainingMetrics, summary="Get Metrics",
            responses={**NOT_FOUND})
async def get_metrics(run: SessionDep, state: StateDep, caller: Caller) -> TrainingMetrics:
    """The metrics of the last finished epoch."""
    history = await state.trainings.history(caller, run)
    session = session_id(run["metadata"]["name"])
    if not history:
        raise NotFound(f"No metrics yet for session '{session}': no epoch has finished")
    return TrainingMetrics.of(session, history[-1])


@router.get("/{session_id}/history", response_model=list[TrainingMetrics], summary="Get History",
            responses={**NOT_FOUND})
async def get_history(run: SessionDep, state: StateDep, caller: Caller) -> list[TrainingMetrics]:
    """The metrics of every finished epoch, in order."""
    session = session_id(run["metadata"]["name"])
    return [TrainingMetrics.of(session, m) for m in await state.trainings.history(caller, run)]


@router.get("/{session_id}/logs", response_model=list[LogLine], summary="Get Logs", responses={**NOT_FOUND})
async def get_logs(run: SessionDep, state: StateDep, caller: Caller,
                   limit: Annotated[int, Query(ge=1, le=10_000, description="Most entries to return")] = 100
                   ) -> list[LogLine]:
    """The last entries of the session's log (its Slurm job's output)."""
    session = session_id(run["metadata"]["name"])
    return [LogLine.of(session, e) for e in await state.trainings.logs(caller, run, limit)]
