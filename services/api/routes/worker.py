"""Compute worker endpoints (a worker token only, ``edx-arena admin create-worker``): claim a
run, renew its lease, download its input and script, upload its output and record.

The work is in :mod:`services.submissions.remote`; every call after the claim names the
attempt, and a call for an attempt that is over is refused (409).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from services.deps import SessionDep, WorkerDep
from services.submissions import remote

router = APIRouter(prefix="/api/v1/worker", tags=["worker"])

Attempt = Annotated[int, Query(ge=1, le=2**31 - 1)]


class ClaimBody(BaseModel):
    #: The compute host's own name for itself (recorded on the run, after the account's name).
    host: str = Field(default="", max_length=120)


class RunRecord(BaseModel):
    outcome: str = Field(max_length=40)
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    runtime_seconds: float | None = Field(default=None, ge=0, le=10**7)
    peak_memory_bytes: int | None = Field(default=None, ge=0, le=2**62)
    log: str = Field(default="", max_length=8 * 2**20)
    message: str = Field(default="", max_length=4096)


@router.post("/runs/{submission_id}/claim", responses={204: {"description": "nothing to run"}})
def claim(submission_id: str, session: SessionDep, worker: WorkerDep, body: ClaimBody | None = None) -> Any:
    """Claim the run (a lease); its job: limits, image pinned by digest, input URL and sha256,
    script; 204 when there is nothing to run (a duplicate delivery, a finished or reused run)."""
    name = f"{worker.name}:{body.host}" if body and body.host else worker.name
    job = remote.claim_run(session, submission_id, worker=name)
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return job


@router.post("/runs/{submission_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
def heartbeat(submission_id: str, attempt: Attempt, session: SessionDep, _: WorkerDep) -> None:
    """Extend the lease; 409 when the attempt is over (stop the run)."""
    remote.renew(session, submission_id, attempt=attempt)


@router.get("/runs/{submission_id}/input", response_class=FileResponse)
def download_input(submission_id: str, attempt: Attempt, session: SessionDep, _: WorkerDep) -> FileResponse:
    """The run's input: the tier's view without truth."""
    return FileResponse(remote.input_file(session, submission_id, attempt=attempt), media_type="application/x-hdf5")


@router.get("/runs/{submission_id}/script", response_class=FileResponse)
def download_script(submission_id: str, attempt: Attempt, session: SessionDep, _: WorkerDep) -> FileResponse:
    """A script submission's file (``.py`` or ``.zip``)."""
    return FileResponse(remote.script_file(session, submission_id, attempt=attempt))


@router.put("/runs/{submission_id}/output", status_code=status.HTTP_204_NO_CONTENT)
async def upload_output(
    submission_id: str, attempt: Attempt, request: Request, session: SessionDep, _: WorkerDep
) -> None:
    """The run's ``result.h5`` as the request body, streamed with the sandbox's output cap."""
    await remote.store_output(session, submission_id, attempt=attempt, body=request.stream())


@router.post("/runs/{submission_id}/finish")
def finish(submission_id: str, attempt: Attempt, body: RunRecord, session: SessionDep, _: WorkerDep) -> dict:
    """The run record; a succeeded run's uploaded output is validated (isolated) and queued for
    scoring. Returns the submission's status."""
    state = remote.finish(session, submission_id, attempt=attempt, record=body.model_dump())
    return {"status": state}
