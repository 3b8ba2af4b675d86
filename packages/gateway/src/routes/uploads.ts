import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { HttpError } from "../httpError.js";
import type { JobRunner } from "../jobs/jobRunner.js";
import { jobView } from "../jobs/jobState.js";
import type { JobStore } from "../jobs/jobStore.js";
import { errorSchema, jobFileSchema, jobIdParams, jobRequestSchema, jobSchema } from "../schemas.js";

/** Upload jobs (DESIGN §9): publish a server-side folder under GATEWAY_JOB_ROOTS as one job. */
export function registerUploadJobRoutes(app: FastifyInstance, deps: { runner: JobRunner; store: JobStore }): void {
  const { runner, store } = deps;
  const api = app.withTypeProvider<ZodTypeProvider>();
  const job = async (id: string) => {
    const j = await store.getJob(id);
    if (!j) throw new HttpError(404, "NOT_FOUND", `no upload job ${id}`);
    return j;
  };

  api.post(
    "/api/v1/uploads/",
    {
      config: { role: "upload" },
      schema: {
        summary: "Start an upload job over a server-side folder (under GATEWAY_JOB_ROOTS)",
        tags: ["jobs"],
        body: jobRequestSchema,
        response: { 201: jobSchema, 200: jobSchema, 400: errorSchema, 403: errorSchema, 404: errorSchema },
      },
    },
    async (request, reply) => {
      const { job: created, created: isNew } = await runner.create(request.body, request.principal!);
      return reply.code(isNew ? 201 : 200).send(jobView(created));
    },
  );
  api.get(
    "/api/v1/uploads/",
    {
      config: { role: "read" },
      schema: {
        summary: "Upload jobs, newest first",
        tags: ["jobs"],
        querystring: z.object({ limit: z.coerce.number().int().min(1).max(1000).optional() }),
        response: { 200: z.object({ uploads: z.array(jobSchema) }) },
      },
    },
    async (request) => ({ uploads: (await store.listJobs()).slice(0, request.query.limit ?? 100).map(jobView) }),
  );
  api.get(
    "/api/v1/uploads/:upload_id",
    {
      config: { role: "read" },
      schema: {
        summary: "One upload job",
        tags: ["jobs"],
        params: jobIdParams,
        response: { 200: jobSchema, 404: errorSchema },
      },
    },
    async (request) => jobView(await job(request.params.upload_id)),
  );
  api.get(
    "/api/v1/uploads/:upload_id/files",
    {
      config: { role: "read" },
      schema: {
        summary: "The files of an upload job and the state of each",
        tags: ["jobs"],
        params: jobIdParams,
        response: { 200: z.object({ files: z.array(jobFileSchema) }), 404: errorSchema },
      },
    },
    async (request) => {
      await job(request.params.upload_id);
      return { files: await store.listFiles(request.params.upload_id) };
    },
  );
}
