"""/api/v1/system/info: seed 002's system monitoring, answered from Slurm (the training cluster's nodes)."""

from __future__ import annotations

from fastapi import APIRouter

from aifactory.api.deps import Caller, Inference, StateDep
from aifactory.api.training.schemas import ErrorDetail, SystemInfo
from aifactory.api.training.sessions import AUTH

router = APIRouter(prefix="/api/v1/system", tags=["system"], dependencies=[Inference], responses={**AUTH})


@router.get("/info", response_model=SystemInfo, summary="Get System Info",
            responses={503: {"model": ErrorDetail, "description": "Slurm's nodes cannot be read (its words)"}})
async def system_info(state: StateDep, caller: Caller) -> SystemInfo:
    """CPU, memory and GPU use of the training cluster's nodes as Slurm reports them (one cached read shared by
    every caller), and the free and total disk of the tenant's storage area."""
    return SystemInfo.of(await state.trainings.system(caller))
