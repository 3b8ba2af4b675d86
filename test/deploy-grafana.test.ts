import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createMetrics, type Metrics } from "@filerelay/core/internal";
import { repoRoot } from "./support/index.js";

/**
 * The dashboard must query series the services really expose, with labels
 * they really carry, and cover every filerelay metric. The exposed series are
 * read from createMetrics() itself, so renaming a metric breaks this test
 * instead of silently blanking a panel.
 */

interface Target {
  expr: string;
  datasource: { uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  gridPos: { x: number; y: number; w: number; h: number };
}
const dashboard = JSON.parse(readFileSync(join(repoRoot, "deploy/grafana/filerelay.json"), "utf8")) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown }[] };
};

/** Series names and their label names, as exposed after every kind of update. */
async function exposedSeries(): Promise<Map<string, Set<string>>> {
  const series = new Map<string, Set<string>>();
  const record = async (m: Metrics) => {
    m.inFlight.inc();
    m.natsConnected.set(1);
    m.natsReconnects.inc();
    for (const metric of await m.registry.getMetricsAsJSON()) {
      for (const v of metric.values) {
        const name = "metricName" in v && typeof v.metricName === "string" ? v.metricName : metric.name;
        const labels = series.get(name) ?? new Set<string>(["service"]);
        for (const l of Object.keys(v.labels)) labels.add(l);
        series.set(name, labels);
      }
    }
  };
  await using consumer = createMetrics("consumer");
  consumer.fileOutcome({ outcome: "published", source: "s", bytes: 1, durationMs: 1 });
  consumer.fileOutcome({ outcome: "failed", source: "s", bytes: 1, durationMs: 1, code: "FILE_TOO_LARGE" });
  consumer.pendingFiles.set(1);
  await record(consumer);
  await using producer = createMetrics("producer");
  producer.fileOutcome({ outcome: "written", group: "g", bytes: 1, durationMs: 1, endToEndMs: 1 });
  producer.fileOutcome({ outcome: "dead_lettered", group: "g", bytes: 1, durationMs: 1, code: "PATH_UNSAFE" });
  producer.trackPendingMessages("g", () => Promise.resolve(3));
  await record(producer);
  return series;
}

/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = new Set(["instance", "job"]);

const queries = (): { panel: Panel; expr: string }[] =>
  dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((t) => ({ panel, expr: t.expr })));

/** `name{matchers}` selectors in a PromQL expression (function names are followed by "(", not "{"). */
function selectors(expr: string): { name: string; labels: string[] }[] {
  return [...expr.matchAll(/\b([a-z_:][a-z0-9_:]*)\{([^}]*)\}/g)].map((m) => ({
    name: m[1]!,
    labels: [...m[2]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]!),
  }));
}

describe("deploy/grafana/filerelay.json", () => {
  it("is a dashboard with a Prometheus data source variable that every panel uses", () => {
    expect(dashboard.uid).toBe("filerelay");
    const ds = dashboard.templating.list.find((v) => v.type === "datasource");
    expect(ds).toMatchObject({ name: "datasource", query: "prometheus" });
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels.filter((x) => x.type !== "row")) {
      expect(p.datasource, p.title).toEqual({ type: "prometheus", uid: "${datasource}" });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.datasource.uid).toBe("${datasource}");
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
  });

  it("queries only series the services expose, with labels they carry", async () => {
    const series = await exposedSeries();
    for (const { panel, expr } of queries()) {
      const found = selectors(expr);
      expect(found.length, `${panel.title}: ${expr}`).toBeGreaterThan(0);
      for (const { name, labels } of found) {
        const known = series.get(name);
        expect(known, `${panel.title}: unknown series ${name}`).toBeDefined();
        for (const l of labels)
          expect(known!.has(l) || TARGET_LABELS.has(l), `${panel.title}: ${name}{${l}}`).toBe(true);
      }
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === "query")) {
      const q = (v.query as { query: string }).query;
      const m = /^label_values\((\w+)\{[^}]*\}, (\w+)\)$/.exec(q);
      expect(m, q).not.toBeNull();
      expect(series.get(m![1]!)?.has(m![2]!), q).toBe(true);
    }
  });

  it("shows every filerelay metric: throughput, latency, failures, DLQ, backlog, NATS", async () => {
    const used = new Set(queries().flatMap(({ expr }) => selectors(expr).map((s) => s.name)));
    const families = [...(await exposedSeries()).keys()]
      .filter((n) => n.startsWith("filerelay_"))
      .map((n) => n.replace(/_(bucket|sum|count)$/, ""));
    for (const family of new Set(families)) {
      expect(
        [...used].some((u) => u === family || u.startsWith(`${family}_`)),
        `${family} on the dashboard`,
      ).toBe(true);
    }
    const exprs = queries().map((q) => q.expr);
    expect(exprs.some((e) => e.includes('outcome="dead_lettered"'))).toBe(true);
    expect(
      exprs.some((e) => e.includes("histogram_quantile(0.99, sum by (le, group) (rate(filerelay_end_to_end")),
    ).toBe(true);
  });
});
