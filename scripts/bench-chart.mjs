#!/usr/bin/env node
// Draws docs/benchmarks.svg from bench-results/*.json (written by `pnpm bench`):
// one horizontal bar group per benchmark, filerelay next to its reference
// (cp, rclone) or its target. Hand-written SVG, no dependency.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../", import.meta.url).pathname;
const resultsDir = join(root, "bench-results");
const out = join(root, "docs", "benchmarks.svg");

const results = {};
for (const f of readdirSync(resultsDir).filter((n) => n.endsWith(".json"))) {
  const r = JSON.parse(readFileSync(join(resultsDir, f), "utf8"));
  results[r.name] = r;
}
const m = (name, key) => results[name]?.metrics?.[key];

/** Panels: a title, a unit, and bars { label, value, kind: "ours" | "ref" | "target" }. */
const panels = [];
if (results["small-files"]) {
  panels.push({
    title: `Small files (${m("small-files", "files")} × 4 KiB, archive + fsync), files/s`,
    bars: [
      { label: "filerelay", value: m("small-files", "filerelayFilesPerSec"), kind: "ours" },
      { label: "floor", value: 1500, kind: "target" },
      { label: "target", value: 3000, kind: "target" },
      { label: "rclone copy", value: m("small-files", "rcloneFilesPerSec"), kind: "ref" },
      { label: "cp -r", value: m("small-files", "cpFilesPerSec"), kind: "ref" },
    ],
  });
}
if (results["producer-scaling"]) {
  const s = results["producer-scaling"].metrics;
  panels.push({
    title: "Producer scaling (small-file set), files/s",
    bars: Object.entries(s)
      .filter(([k]) => k.startsWith("filesPerSec_"))
      .map(([k, v]) => ({ label: k.replace("filesPerSec_", ""), value: v, kind: "ours" })),
  });
}
if (results["mixed"]) {
  panels.push({
    title: `Mixed (${m("mixed", "files")} files, 1 KiB–64 MiB log-uniform), MB/s`,
    bars: [{ label: "filerelay", value: m("mixed", "MBps"), kind: "ours" }],
  });
}
for (const name of ["large-file", "large-file-4g"]) {
  if (!results[name]) continue;
  const bytes = m(name, "bytes");
  const size = bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(0)} GiB` : `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
  panels.push({
    title: `Large file (${size}), MB/s — peak RSS consumer ${m(name, "consumerPeakRssMB")} MB, producer ${m(name, "producerPeakRssMB")} MB`,
    bars: [
      { label: "filerelay", value: m(name, "filerelayMBps"), kind: "ours" },
      { label: "raw round trip", value: m(name, "rawRoundTripMBps"), kind: "ref" },
      { label: "cp + sync", value: m(name, "cpSyncMBps"), kind: "ref" },
      { label: "cp", value: m(name, "cpMBps"), kind: "ref" },
    ],
  });
}
if (results["latency"]) {
  panels.push({
    title: `Latency, 4 KiB every 200 ms, STABILITY_MS=${m("latency", "stabilityMs")}: ms`,
    bars: [
      { label: "p50", value: m("latency", "p50Ms"), kind: "ours" },
      { label: "p95", value: m("latency", "p95Ms"), kind: "ours" },
      { label: "p99", value: m("latency", "p99Ms"), kind: "ours" },
      { label: "p99 limit", value: m("latency", "stabilityMs") + 150, kind: "target" },
    ],
  });
}
if (results["scan"]) {
  panels.push({
    title: `Scan, ${m("scan", "residentFiles")} resident files: one poll (ms) · idle CPU ${m("scan", "idleCpuPercent")} %`,
    bars: [
      { label: "poll CPU", value: m("scan", "pollCpuMs"), kind: "ours" },
      { label: "poll wall", value: m("scan", "pollWallMs"), kind: "ours" },
      { label: "CPU limit", value: 1000, kind: "target" },
    ],
  });
}
/**
 * Consumer peak RSS with the backlog held in memory (every discovered file a
 * record), measured with the same benchmark on the tree before the discovery
 * window (2026-12-02); 1,000,000 was not run (≈ 2.7 GB extrapolated).
 */
const backfillRssBefore = { 100000: 391, 300000: 900 };
const backfills = Object.keys(results)
  .filter((n) => n.startsWith("backfill-") && !n.endsWith("-leave"))
  .sort((a, b) => m(a, "files") - m(b, "files") || m(b, "dirs") - m(a, "dirs"));
if (backfills.length > 0) {
  panels.push({
    title: "Backfill (tiny files already in INPUT_DIR, delete mode): consumer peak RSS against backlog, MB",
    bars: [
      ...backfills.flatMap((n) => {
        const files = m(n, "files");
        const label = `${files / 1000}k${m(n, "dirs") === 0 ? " flat" : ""}`;
        const before = m(n, "dirs") === 0 ? undefined : backfillRssBefore[files];
        return [
          ...(before === undefined ? [] : [{ label: `${label} before`, value: before, kind: "ref" }]),
          { label, value: m(n, "consumerPeakRssMB"), kind: "ours" },
        ];
      }),
      { label: "limit", value: 256, kind: "target" },
    ],
  });
}

const W = 760;
const labelW = 110;
const barH = 16;
const gap = 5;
const colors = { ours: "#2f6fb0", ref: "#9aa5b1", target: "#e0a030" };
const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
let y = 40;
const parts = [];
for (const p of panels) {
  const bars = p.bars.filter((b) => typeof b.value === "number" && Number.isFinite(b.value));
  const max = Math.max(1, ...bars.map((b) => b.value));
  parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  y += 8;
  for (const b of bars) {
    const w = Math.max(1, Math.round(((W - labelW - 90) * b.value) / max));
    parts.push(
      `<text x="${labelW - 6}" y="${y + barH - 4}" font-size="12" text-anchor="end">${esc(b.label)}</text>`,
      `<rect x="${labelW}" y="${y}" width="${w}" height="${barH}" fill="${colors[b.kind]}"/>`,
      `<text x="${labelW + w + 5}" y="${y + barH - 4}" font-size="12">${esc(b.value)}</text>`,
    );
    y += barH + gap;
  }
  y += 22;
}
const taken = Object.values(results)
  .map((r) => r.takenAt)
  .sort()
  .at(-1);
const machine = Object.values(results)[0]?.machine;
const header = machine
  ? `filerelay benchmarks ${taken?.slice(0, 10) ?? "?"} — ${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}, ${machine.natsServer.replace(/^nats-server: /, "nats-server ")}`
  : "filerelay benchmarks";
const legend = [
  ["ours", "filerelay"],
  ["ref", "reference / before"],
  ["target", "target / limit"],
]
  .map(
    ([k, t], i) =>
      `<rect x="${10 + i * 140}" y="${y}" width="12" height="12" fill="${colors[k]}"/><text x="${28 + i * 140}" y="${y + 11}" font-size="12">${t}</text>`,
  )
  .join("");
y += 24;
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14">${esc(header)}</text>
${parts.join("\n")}
${legend}
</svg>
`;
writeFileSync(out, svg);
console.log(`wrote ${out} (${panels.length} panels from ${Object.keys(results).length} results)`);
