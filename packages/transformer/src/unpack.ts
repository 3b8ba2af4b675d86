import { createReadStream, createWriteStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { buildEnvelope, describeError, FilerelayError } from "@filerelay/core";
import { archiveKind, gunzippedName, type ArchiveKind } from "./archiveKind.js";
import { readArchive, type ArchiveEntry } from "./archive/readers.js";
import { checkEntryPath, DERIVATIONS, derivedId, entrySubject } from "./derive.js";
import type { Emit, Item, Job, Step } from "./item.js";
import { entryRatioExceeded, limitExceeded, type ExtractLimits, type ExtractTally } from "./limits.js";

export interface UnpackOptions {
  limits: ExtractLimits;
  /** Archive levels unpacked (1 = only the consumed file). */
  maxDepth: number;
  keepOriginal: boolean;
}

type Mode = "check" | "publish";

/** One walk through an archive and the archives inside it (the same order in both passes). */
interface Walk {
  mode: Mode;
  tally: ExtractTally;
  /** Running number of file entries, in walk order. */
  seq: number;
  /** Subject → seq of its last entry: a later entry of the same path replaces an earlier one, as with `tar -x`. */
  last: Map<string, number>;
  emit: Emit;
  job: Job;
}

/**
 * The unpack step: zip, tar, tar.gz/tgz and gz; each entry becomes a child
 * file, nested archives up to maxDepth. The archive is read twice from a
 * local copy: a first pass checks every entry (names, link and device
 * entries, sizes, counts, ratio, format errors, CRCs) and publishes nothing;
 * only an archive that passed is unpacked and published in the second. So a
 * hostile or damaged archive is dead-lettered with no child published.
 */
export function unpackStep(opts: UnpackOptions): Step {
  const { limits, maxDepth, keepOriginal } = opts;

  const unsafe = (message: string) => new FilerelayError("ARCHIVE_UNSAFE_PATH", message);
  const tooLarge = (message: string) => new FilerelayError("ARCHIVE_TOO_LARGE", message);

  const check = (tally: ExtractTally) => {
    const reason = limitExceeded(tally, limits);
    if (reason) throw tooLarge(`the archive ${reason}`);
  };

  /** Counts the bytes of an entry as they stream, failing as soon as a limit is passed. */
  const counted = (source: Readable, walk: Walk): Readable => {
    let n = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        walk.tally.bytes += chunk.length;
        n += chunk.length;
        if ((n & 0xfffff) < chunk.length) walk.job.working();
        const reason = limitExceeded(walk.tally, limits);
        cb(reason ? tooLarge(`the archive ${reason}`) : null, chunk);
      },
    });
    source.on("error", (err) => counter.destroy(err));
    return source.pipe(counter);
  };

  const walkArchive = async (
    file: string,
    kind: ArchiveKind,
    archive: { subject: string; filename: string; basisId: string; depth: number; source: string },
    walk: Walk,
  ): Promise<void> => {
    await readArchive(file, kind, gunzippedName(archive.filename), async (entry: ArchiveEntry) => {
      walk.job.signal.throwIfAborted();
      if (entry.type === "symlink" || entry.type === "hardlink" || entry.type === "device") {
        throw unsafe(`archive entry ${JSON.stringify(entry.name)} is a ${entry.type} entry: refused`);
      }
      const verdict = checkEntryPath(entry.name);
      if (!verdict.ok) throw unsafe(verdict.reason);
      if (entry.type === "directory" || verdict.directory) return;

      walk.tally.files += 1;
      walk.seq += 1;
      const seq = walk.seq;
      check({ ...walk.tally, bytes: walk.tally.bytes + (entry.size ?? 0) });
      if (entry.compressedSize !== undefined && entry.size !== undefined) {
        if (entryRatioExceeded(entry.size, entry.compressedSize, limits.maxRatio)) {
          throw tooLarge(
            `archive entry ${JSON.stringify(verdict.path)} declares ${entry.size} bytes from ${entry.compressedSize}: ` +
              `more than EXTRACT_MAX_RATIO (${limits.maxRatio}) times, a compression bomb`,
          );
        }
      }
      const subject = entrySubject(archive.subject, verdict.path);
      const slash = verdict.path.lastIndexOf("/");
      const child: Item = {
        id: derivedId(archive.basisId, DERIVATIONS.entry(verdict.path)),
        basisId: "",
        parentId: archive.basisId,
        subject,
        filename: verdict.path.slice(slash + 1),
        mtime: entry.mtime ?? new Date(0),
        size: entry.size,
        depth: archive.depth + 1,
        open: () => counted(entry.open(), walk),
      };
      child.basisId = child.id;

      if (walk.mode === "check") {
        // A name no sink could take is refused now, not after its siblings were published.
        try {
          buildEnvelope(
            { source: archive.source, subject, id: child.id },
            { size: 0, sha256: "", payload: { kind: "inline" } },
          );
        } catch (err) {
          throw unsafe(
            `archive entry ${JSON.stringify(verdict.path)} has a name that cannot be used: ${describeError(err)}`,
          );
        }
        walk.last.set(subject, seq);
      } else if (walk.last.get(subject) !== seq) {
        return; // replaced by a later entry of the same path
      }

      const innerKind = archiveKind(child.filename);
      if (innerKind !== undefined && child.depth < maxDepth) {
        // An archive inside: a local copy, read as a whole archive (zip needs random access).
        const copy = walk.job.scratchPath(child.filename);
        try {
          await pipeline(child.open(), createWriteStream(copy));
          const spooled: Item = {
            ...child,
            file: copy,
            size: (await stat(copy)).size,
            open: () => createReadStream(copy),
          };
          if (walk.mode === "publish" && keepOriginal) await walk.emit(spooled);
          await walkArchive(
            copy,
            innerKind,
            { subject, filename: child.filename, basisId: child.basisId, depth: child.depth, source: archive.source },
            walk,
          );
        } finally {
          await rm(copy, { force: true });
        }
        return;
      }
      if (walk.mode === "check") {
        await pipeline(child.open(), drain());
      } else {
        await walk.emit(child);
      }
    });
  };

  return {
    name: "unpack",
    applies: (item) => archiveKind(item.filename) !== undefined && item.depth < maxDepth,
    async run(item, emit, job) {
      const kind = archiveKind(item.filename);
      if (kind === undefined) return emit(item);
      let file = item.file;
      let copied: string | undefined;
      if (file === undefined) {
        copied = job.scratchPath(item.filename);
        await pipeline(item.open(), createWriteStream(copied));
        file = copied;
      }
      try {
        const archiveBytes = item.size ?? (await stat(file)).size;
        const archive = {
          subject: item.subject,
          filename: item.filename,
          basisId: item.basisId,
          depth: item.depth,
          source: job.source,
        };
        const last = new Map<string, number>();
        const newWalk = (mode: Mode): Walk => ({
          mode,
          tally: { bytes: 0, files: 0, archiveBytes },
          seq: 0,
          last,
          emit,
          job,
        });
        await walkArchive(file, kind, archive, newWalk("check"));
        job.log.debug({ entries: last.size }, "archive checked");
        if (keepOriginal) await emit({ ...item, file, open: () => createReadStream(file) });
        await walkArchive(file, kind, archive, newWalk("publish"));
      } finally {
        if (copied) await rm(copied, { force: true });
      }
    },
  };
}

function drain(): Transform {
  return new Transform({
    transform(_chunk: Buffer, _enc, cb: TransformCallback) {
      cb();
    },
  });
}
