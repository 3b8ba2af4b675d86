import { z } from "zod";
import { ERROR_CODES, type ErrorCode } from "@filerelay/core";

/** Every refusal: a message and a code from core's ERROR_CODES. */
export const errorSchema = z
  .object({
    error: z.string(),
    code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
  })
  .describe("Error");

export const publishedFileSchema = z.object({
  file_id: z.string().describe("ce-id of the published file version"),
  filename: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  status_url: z.string(),
});
export const publishedFilesSchema = z.object({ files: z.array(publishedFileSchema) });

export const chunkInitSchema = z.object({
  filename: z.string().min(1),
  size: z.number().int().nonnegative(),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/)
    .optional()
    .describe("hex SHA-256 of the whole file, checked on complete"),
  chunk_size: z
    .number()
    .int()
    .positive()
    .optional()
    .describe("bytes per chunk (the last may be shorter); default 8 MiB"),
  path: z.string().optional().describe("directory (or path) of the file as it should be published"),
});
export const chunkInitReplySchema = z.object({
  file_id: z.string(),
  upload_id: z.string(),
  chunk_size: z.number().int(),
  total_chunks: z.number().int(),
  expires_at: z.string(),
});
export const chunkQuerySchema = z.object({
  upload_id: z.string().min(1),
  chunk_number: z.coerce.number().int().min(1).describe("1-based"),
});
export const chunkReplySchema = z.object({
  file_id: z.string(),
  chunk_number: z.number().int(),
  received_chunks: z.number().int(),
  total_chunks: z.number().int(),
});
export const completeQuerySchema = z.object({ upload_id: z.string().min(1) });
export const fileIdParams = z.object({ file_id: z.string().min(1).max(128) });

export const JOB_STATES = ["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"] as const;
export const jobRequestSchema = z.object({
  upload_id: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/)
    .optional()
    .describe("idempotency key: the same id twice returns the existing job"),
  source_folder: z.string().min(1),
  destination_bucket: z.string().min(1).max(255).optional().describe("sent as ce-destination"),
  pattern: z.string().min(1).optional().describe("glob relative to source_folder (default **/*)"),
});
export const jobSchema = z.object({
  upload_id: z.string(),
  state: z.enum(JOB_STATES),
  source_folder: z.string(),
  destination_bucket: z.string().nullable(),
  pattern: z.string(),
  progress: z.number(),
  total_files: z.number().int(),
  completed_files: z.number().int(),
  failed_files: z.number().int(),
  error: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
export const jobFileSchema = z.object({
  path: z.string(),
  file_id: z.string(),
  state: z.enum(["PENDING", "COMPLETED", "FAILED"]),
  size: z.number().int().nullable(),
  error: z.string().nullable(),
});
export const jobIdParams = z.object({ upload_id: z.string().min(1).max(64) });
