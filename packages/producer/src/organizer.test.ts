import { describe, expect, it } from "vitest";
import { SinkError, withNumericSuffix, type Envelope } from "@filerelay/core/internal";
import { DEFAULT_FILENAME_TEMPLATE } from "./config.js";
import { createOrganizer, fitName, resolveInside, sanitizeComponent, type OrganizerConfig } from "./organizer.js";

const now = new Date("2024-03-07T23:59:59.000Z");
const id = "0f8fad5b-d9cb-469f-a165-70867728950e";
const envelope = (over: Partial<Envelope> = {}): Envelope => ({
  id,
  source: "api",
  type: "io.filerelay.file.v1",
  time: now,
  subject: "reports/2024/Q1.Report.CSV",
  contentType: "text/csv",
  filename: "Q1.Report.CSV",
  size: 3,
  sha256: "0".repeat(64),
  mtime: now,
  payload: { kind: "inline" },
  ...over,
});
const pathFor = (cfg: Partial<OrganizerConfig>, env: Envelope = envelope()) =>
  createOrganizer({ ORGANIZE_BY: "date", FILENAME_TEMPLATE: DEFAULT_FILENAME_TEMPLATE, ...cfg }).pathFor(env, now);

describe("organizer", () => {
  it("builds the documented paths for each ORGANIZE_BY with the default template", () => {
    // {{.Name}}-{{.ShortID}}{{.Ext}}: the original name stays recognizable, the id keeps versions apart.
    expect(pathFor({ ORGANIZE_BY: "date" })).toBe("2024/03/07/Q1.Report-0f8fad5b.CSV");
    expect(pathFor({ ORGANIZE_BY: "type" })).toBe("csv/Q1.Report-0f8fad5b.CSV");
    expect(pathFor({ ORGANIZE_BY: "source" })).toBe("api/Q1.Report-0f8fad5b.CSV");
    expect(pathFor({ ORGANIZE_BY: "none" })).toBe("Q1.Report-0f8fad5b.CSV");
    expect(pathFor({ ORGANIZE_BY: "type" }, envelope({ filename: "README", subject: "README" }))).toBe(
      "unknown/README-0f8fad5b",
    );
    // The same file version (a redelivery) always gets the same name; another version another one.
    expect(pathFor({ ORGANIZE_BY: "none" })).toBe(pathFor({ ORGANIZE_BY: "none" }));
    expect(pathFor({ ORGANIZE_BY: "none" }, envelope({ id: "1f8fad5b-d9cb-469f-a165-70867728950e" }))).toBe(
      "Q1.Report-1f8fad5b.CSV",
    );
  });

  it("fills every placeholder", () => {
    const t = "{{.RelDir}}/{{.Date}}_{{.Year}}{{.Month}}{{.Day}}_{{.ShortID}}_{{.Name}}_{{.Type}}_{{.Source}}{{.Ext}}";
    expect(pathFor({ ORGANIZE_BY: "none", FILENAME_TEMPLATE: t })).toBe(
      "reports/2024/2024-03-07_20240307_0f8fad5b_Q1.Report_csv_api.CSV",
    );
    // An empty RelDir collapses instead of producing an empty segment.
    expect(pathFor({ ORGANIZE_BY: "none", FILENAME_TEMPLATE: t }, envelope({ subject: "Q1.Report.CSV" }))).toBe(
      "2024-03-07_20240307_0f8fad5b_Q1.Report_csv_api.CSV",
    );
  });

  it("sanitizes hostile values so the path stays a plain relative path", () => {
    const hostile = envelope({ source: "../../etc", filename: "..", subject: ".." });
    const p = pathFor({ ORGANIZE_BY: "source", FILENAME_TEMPLATE: "{{.Name}}" }, hostile);
    expect(p).toBe("__.._etc/_");
    expect(
      pathFor(
        { ORGANIZE_BY: "none", FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}" },
        envelope({ filename: "a\u0000b\\c/d\n.txt" }),
      ),
    ).toBe("a_b_c_d_.txt");
    // Hidden names (and so our temp-file pattern) cannot be produced.
    expect(
      pathFor({ ORGANIZE_BY: "none", FILENAME_TEMPLATE: "{{.Name}}" }, envelope({ filename: ".filerelay-x.tmp" })),
    ).toBe("_filerelay-x");
    expect(
      pathFor(
        { ORGANIZE_BY: "source", FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}" },
        envelope({ source: "s", subject: ".git/x/f.txt", filename: "f.txt" }),
      ),
    ).toBe("s/_git/x/f.txt");
  });

  it("keeps every component within 255 bytes, on a character boundary, keeping the extension", () => {
    const name = "é".repeat(200) + ".txt"; // 404 bytes
    const p = pathFor({ ORGANIZE_BY: "none", FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}" }, envelope({ filename: name }));
    expect(Buffer.byteLength(p)).toBeLessThanOrEqual(255);
    expect(p.endsWith("é.txt")).toBe(true);
    expect(Buffer.byteLength(fitName("a".repeat(300)))).toBe(255);
    expect(sanitizeComponent("")).toBe("_");
    const suffixed = withNumericSuffix(`dir/${p}`, 12);
    expect(suffixed.startsWith("dir/")).toBe(true);
    expect(suffixed.endsWith("-12.txt")).toBe(true);
    expect(Buffer.byteLength(suffixed.slice(4))).toBeLessThanOrEqual(255);
  });

  it("refuses paths that would leave the root", () => {
    expect(resolveInside("/out", "a/b.txt")).toBe("/out/a/b.txt");
    for (const bad of ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a\\..\\b", "a/\u0000"]) {
      const err = (() => {
        try {
          resolveInside("/out", bad);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err, bad).toBeInstanceOf(SinkError);
      expect((err as SinkError).code).toBe("PATH_UNSAFE");
      expect((err as SinkError).permanent).toBe(true);
    }
  });
});
