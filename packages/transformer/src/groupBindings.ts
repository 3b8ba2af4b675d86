import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import { ConfigError } from "@filerelay/core";

/** A group the transformer consumes or provisions, the subject it needs, and the variables naming both. */
export interface GroupBinding {
  group: string;
  subject: string;
  groupVariable: "TRANSFORM_GROUP" | "SINK_GROUPS";
  subjectVariable: "SUBJECT" | "OUTPUT_SUBJECT";
}

/** The groups a transformer with this configuration binds: its own on SUBJECT, its sinks' on OUTPUT_SUBJECT (pure). */
export function wantedBindings(config: {
  TRANSFORM_GROUP: string;
  SUBJECT: string;
  SINK_GROUPS: readonly string[];
  OUTPUT_SUBJECT: string;
}): GroupBinding[] {
  return [
    {
      group: config.TRANSFORM_GROUP,
      subject: config.SUBJECT,
      groupVariable: "TRANSFORM_GROUP",
      subjectVariable: "SUBJECT",
    },
    ...config.SINK_GROUPS.map((group) => ({
      group,
      subject: config.OUTPUT_SUBJECT,
      groupVariable: "SINK_GROUPS" as const,
      subjectVariable: "OUTPUT_SUBJECT" as const,
    })),
  ];
}

/**
 * One problem per wanted group whose durable already filters another subject
 * (pure): a group reads one subject, so binding it here would either fail deep
 * in provisioning or, worse, leave its readers on the wrong files. Each
 * message names the group, the subject it is bound to and what to change.
 */
export function bindingProblems(
  wanted: readonly GroupBinding[],
  existing: ReadonlyMap<string, string | undefined>,
  stream: string,
): string[] {
  const problems: string[] = [];
  for (const w of wanted) {
    const bound = existing.get(w.group);
    if (bound === undefined || bound === "" || bound === w.subject) continue;
    problems.push(
      `${w.groupVariable}: group ${w.group} is already bound to subject ${bound} on stream ${stream}, ` +
        `but this transformer needs it on ${w.subjectVariable} ${w.subject}; a group reads one subject: ` +
        `change ${w.groupVariable} to a group name of its own (or ${w.subjectVariable}, or delete the durable ${w.group} if nothing reads it any more)`,
    );
  }
  return problems;
}

/** The subject each existing durable of `groups` filters on `stream` (none when the stream does not exist yet). */
export async function existingBindings(
  jsm: JetStreamManager,
  stream: string,
  groups: readonly string[],
): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  for (const group of new Set(groups)) {
    try {
      out.set(group, (await jsm.consumers.info(stream, group)).config.filter_subject);
    } catch (err) {
      const notFound =
        err instanceof JetStreamApiError &&
        (err.code === JetStreamApiCodes.ConsumerNotFound || err.code === JetStreamApiCodes.StreamNotFound);
      if (!notFound) throw err;
    }
  }
  return out;
}

/** Stops the start (exit 78 under runService) when a group this transformer binds reads another subject. */
export async function checkGroupBindings(
  jsm: JetStreamManager,
  stream: string,
  wanted: readonly GroupBinding[],
): Promise<void> {
  const existing = await existingBindings(
    jsm,
    stream,
    wanted.map((w) => w.group),
  );
  const problems = bindingProblems(wanted, existing, stream);
  if (problems.length > 0) throw new ConfigError(problems);
}
