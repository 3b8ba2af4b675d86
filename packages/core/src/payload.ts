/**
 * Payload transport (DESIGN §1): inline bodies and chunked JetStream Object
 * Store objects, both read through one verifying, backpressured Readable.
 * Objects are written and read in the Object Store wire format, so any NATS
 * client can read what we write and vice versa, but with our own code: nats.js
 * `put()` publishes one chunk at a time (slow) and `get()` is an unbounded push
 * consumer that stalls after 16 chunks (nats.js issue #430).
 *
 * The modules, in payload/:
 * - objectFormat: subjects, the meta record, digest encoding (pure)
 * - readInfo: an object's meta record
 * - putObject: the pipelined upload
 * - openPayload: the verifying reader and the meta-only check
 * - deleteObject: removing an object or one revision of it
 * - orderedReader: the ordered pull reader of a subject (also the janitor's scans)
 */
export {
  DEFAULT_PAYLOAD_CHUNK_BYTES,
  objectChunkSubject,
  objectChunkFilter,
  objectChunkId,
  objectMetaFilter,
  objectMetaSubject,
  objectNameToken,
  objectSha256,
  type PayloadObjectInfo,
} from "./payload/objectFormat.js";
export { readPayloadInfo } from "./payload/readInfo.js";
export { putPayloadObject, type PutPayloadOptions, type PutPayloadResult } from "./payload/putObject.js";
export { checkObjectPayload, isVerifiedPayload, openPayload, type OpenPayloadOptions } from "./payload/openPayload.js";
export { deletePayloadObject, purgePayloadRevision } from "./payload/deleteObject.js";
export { OrderedChunkReader } from "./payload/orderedReader.js";
