"""/api/v1/models and /api/v1/datasets: the tenant's registries on the training cluster's shared storage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from aifactory.api.deps import Caller, Management, StateDep
from aifactory.api.training.schemas import DatasetInfo, ErrorDetail, MessageResponse, ModelInfo, UploadResponse, size_mb
from aifactory.api.training.sessions import AUTH
from aifactory.api.training.uploads import OPENAPI_BODY, FilePart

NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such entry in the tenant's registry"},
             400: {"model": ErrorDetail, "description": "A name that is not a plain file name"}}
STORAGE = {503: {"model": ErrorDetail, "description": "The cluster's storage is not configured or not reachable"},
           502: {"model": ErrorDetail, "description": "The storage refused (its words)"}}
UPLOAD = {400: {"model": ErrorDetail, "description": "A name that is not a plain file name, or no file part"},
          409: {"model": ErrorDetail, "description": "The name of a built-in dataset"},
          413: {"model": ErrorDetail, "description": "The file is larger than the cluster's upload limit"}}

models = APIRouter(prefix="/api/v1/models", tags=["models"], dependencies=[Management],
                   responses={**AUTH, **STORAGE})
datasets = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], dependencies=[Management],
                     responses={**AUTH, **STORAGE})


def _declared(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


@models.get("", response_model=list[ModelInfo], summary="List Models")
async def list_models(state: StateDep, caller: Caller) -> list[ModelInfo]:
    """The models in the tenant's registry: trained ones and uploaded ones."""
    return [ModelInfo.of(e) for e in await state.registries.models(caller)]


@models.get("/{model_name}", summary="Download Model", response_class=StreamingResponse,
            responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}},
                                          "description": "The model file (TorchScript for trained models)"}})
async def download_model(model_name: str, state: StateDep, caller: Caller) -> StreamingResponse:
    """The model file, streamed from the cluster's storage."""
    found = await state.registries.model(caller, model_name)
    filename = found.entry.file_path.rsplit("/", 1)[-1]
    return StreamingResponse(found.chunks, media_type="application/octet-stream", headers={
        "Content-Length": str(found.entry.size), "Content-Disposition": f'attachment; filename="{filename}"'})


@models.post("", response_model=UploadResponse, summary="Upload Model", responses={**UPLOAD},
             openapi_extra=OPENAPI_BODY)
async def upload_model(request: Request, state: StateDep, caller: Caller,
                       model_name: Annotated[str, Query(min_length=1, description="The model's name")]
                       ) -> UploadResponse:
    """Upload a model file (multipart, part `file`), streamed to the cluster's storage."""
    part = FilePart(request)
    await part.start()
    entry = await state.registries.upload_model(caller, model_name, part.chunks(), _declared(request))
    return UploadResponse(message=f"Model '{entry.name}' uploaded successfully", name=entry.name,
                          size_mb=size_mb(entry.size))


@models.delete("/{model_name}", response_model=MessageResponse, summary="Delete Model", responses={**NOT_FOUND})
async def delete_model(model_name: str, state: StateDep, caller: Caller) -> MessageResponse:
    """Delete a model from the registry."""
    await state.registries.delete_model(caller, model_name)
    return MessageResponse(message=f"Model '{model_name}' deleted successfully")


@datasets.get("", response_model=list[DatasetInfo], summary="List Datasets")
async def list_datasets(state: StateDep, caller: Caller) -> list[DatasetInfo]:
    """The datasets training sessions may use: the built-in digits and the tenant's uploads."""
    return [DatasetInfo.of(e) for e in await state.registries.datasets(caller)]


@datasets.get("/{dataset_name}", response_model=DatasetInfo, summary="Get Dataset", responses={**NOT_FOUND})
async def get_dataset(dataset_name: str, state: StateDep, caller: Caller) -> DatasetInfo:
    """A dataset's size, sample count, format and dimensions."""
    return DatasetInfo.of(await state.registries.dataset(caller, dataset_name))


@datasets.post("", response_model=UploadResponse, summary="Upload Dataset", responses={**UPLOAD},
               openapi_extra=OPENAPI_BODY)
async def upload_dataset(request: Request, state: StateDep, caller: Caller,
                         dataset_name: Annotated[str, Query(min_length=1, description="The dataset's name")]
                         ) -> UploadResponse:
    """Upload a dataset (multipart, part `file`): a .csv (features, the label last) or an .npz (arrays x, y)."""
    part = FilePart(request)
    filename = await part.start()
    entry = await state.registries.upload_dataset(caller, dataset_name, filename, part.chunks(), _declared(request))
    return UploadResponse(message=f"Dataset '{entry.name}' uploaded successfully", name=entry.name,
                          size_mb=size_mb(entry.size))
