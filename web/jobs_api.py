"""JSON API for deployments, maintenance windows, blackouts and the calendar (R-4, R-5):
typed models in, the service layer, typed models out."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maintenance import describe
from storage import Database

from . import models as m
from .authz import Action, require
from .handle import InvalidInput, SystemHandle
from .models_io import body, path_id, query, record, reply
from .services import System, jobs, principal, windows


class JobsApi:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.sys = System(handle, db)

    # -- jobs -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        data = await body(request, m.JobCreate)
        job_id, count = await jobs.create(self.sys, principal(request), data)
        return reply(m.JobCreated, 201, job_id=job_id, hosts=count)

    async def list_jobs(self, request: Request) -> Response:
        q = query(request, m.JobsQuery)
        items = await jobs.jobs(self.sys, principal(request), q.status)
        listing = [
            m.JobListItem.model_construct(**record(job), hosts=counts) for job, counts in items
        ]
        return reply(m.Jobs, jobs=listing)

    async def get(self, request: Request) -> Response:
        job, rows = await jobs.get(self.sys, principal(request), path_id(request, "job_id"))
        stored = await jobs.stored_plan(self.sys, job.id, rows)
        plan = None
        if stored:
            hosts = [
                m.JobPlanHost(
                    **{k: v for k, v in asdict(h).items() if k != "changes"},
                    changes=[
                        m.JobPlanChange(name=n, from_version=a, to_version=b)
                        for n, a, b in h.changes
                    ],
                )
                for h in stored.values()
            ]
            plan = m.JobPlan(hosts=hosts)
        return reply(m.JobDetail, **record(job), rows=rows, plan=plan)

    async def cancel(self, request: Request) -> Response:
        count = await jobs.cancel(self.sys, principal(request), path_id(request, "job_id"))
        return reply(m.JobsCancelled, cancelled=count)

    async def retry(self, request: Request) -> Response:
        count = await jobs.retry(self.sys, principal(request), path_id(request, "job_id"))
        return reply(m.Retrying, retrying=count)

    async def rollback(self, request: Request) -> Response:
        job_id = path_id(request, "job_id")
        data = await body(request, m.Rollback, optional=True)
        new_id = await jobs.rollback(self.sys, principal(request), job_id, data.host_ids)
        return reply(m.RollbackCreated, 201, job_id=new_id)

    async def preview(self, request: Request) -> Response:
        data = await body(request, m.DeployPreview)
        found = await jobs.preview(self.sys, principal(request), data)
        return reply(
            m.Preview,
            hosts=len(found.hosts),
            all_hosts=found.everything,
            patches=[m.PendingPatch(**p) for p in found.patches],
        )

    async def plan(self, request: Request) -> Response:
        """The plan of a draft job (``services.plans``): what ``POST /api/v1/jobs`` would do."""
        data = await body(request, m.JobCreate)
        found, plan = await jobs.plan(self.sys, principal(request), data)
        return reply(
            m.DeployPlan,
            hosts_total=len(found.host_ids),
            all_hosts=found.everything,
            changes=plan.changes,
            reboots=plan.reboots,
            skipped=plan.skipped,
            predicted_status=plan.predicted(),
            digest=plan.digest(),
            hosts=[m.PlanHost.model_validate(asdict(h)) for h in plan.hosts],
            batches=[m.PlanBatch.model_validate(asdict(b)) for b in plan.batches],
        )

    # -- windows ----------------------------------------------------------------------------

    async def windows(self, request: Request) -> Response:
        return reply(m.Windows, windows=await windows.windows(self.sys, principal(request)))

    async def save_window(self, request: Request) -> Response:
        window_id = path_id(request, "window_id") if "window_id" in request.path_params else None
        data = await body(request, m.Window)
        saved = await windows.save(self.sys, principal(request), data, window_id)
        return reply(m.Created, 201 if window_id is None else 200, id=saved)

    async def window_preview(self, request: Request) -> Response:
        """The next occurrences of a draft window, for the editor's live preview."""
        require(principal(request), Action.MANAGE_WINDOWS)
        try:
            draft = await body(request, m.WindowDraft)
        except InvalidInput as exc:
            # A draft that cannot be saved yet is an answer for the editor (each problem by
            # field), not a 4xx: the editor asks about every draft as it is typed.
            return reply(m.Occurrences, occurrences=[], problems=exc.fields, text="")
        upcoming = windows.upcoming(draft, dt.datetime.now(dt.UTC))
        return reply(
            m.Occurrences,
            occurrences=[m.Occurrence(start=i.start, end=i.end) for i in upcoming],
            problems={},
            text=describe(draft.rule()),
        )

    async def delete_window(self, request: Request) -> Response:
        await windows.delete(self.sys, principal(request), path_id(request, "window_id"))
        return Response(status_code=204)

    async def calendar(self, request: Request) -> Response:
        q = query(request, m.CalendarQuery)
        entries = await windows.upcoming_entries(self.sys, principal(request), q.days)
        return reply(m.Calendar, entries=[m.CalendarEntry(**e) for e in entries])

    async def blackouts(self, request: Request) -> Response:
        return reply(m.Blackouts, blackouts=await windows.blackouts(self.sys, principal(request)))

    async def create_blackout(self, request: Request) -> Response:
        data = await body(request, m.BlackoutCreate)
        blackout_id = await windows.add_blackout(self.sys, principal(request), data)
        return reply(m.Created, 201, id=blackout_id)

    async def delete_blackout(self, request: Request) -> Response:
        await windows.remove_blackout(self.sys, principal(request), path_id(request, "blackout_id"))
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/v1/jobs", self.create, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}", self.get, methods=["GET"]),
            Route("/api/v1/jobs/{job_id:int}/cancel", self.cancel, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}/retry", self.retry, methods=["POST"]),
            Route("/api/v1/jobs/{job_id:int}/rollback", self.rollback, methods=["POST"]),
            Route("/api/v1/deploy/preview", self.preview, methods=["POST"]),
            Route("/api/v1/jobs/plan", self.plan, methods=["POST"]),
            Route("/api/v1/windows", self.windows, methods=["GET"]),
            Route("/api/v1/windows", self.save_window, methods=["POST"]),
            Route("/api/v1/windows/preview", self.window_preview, methods=["POST"]),
            Route("/api/v1/windows/{window_id:int}", self.save_window, methods=["PUT"]),
            Route("/api/v1/windows/{window_id:int}", self.delete_window, methods=["DELETE"]),
            Route("/api/v1/calendar", self.calendar, methods=["GET"]),
            Route("/api/v1/blackouts", self.blackouts, methods=["GET"]),
            Route("/api/v1/blackouts", self.create_blackout, methods=["POST"]),
            Route("/api/v1/blackouts/{blackout_id:int}", self.delete_blackout, methods=["DELETE"]),
        ]
