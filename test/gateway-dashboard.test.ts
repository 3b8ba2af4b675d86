import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { chromium, type Page } from "playwright-core";
import { repoRoot, startNats, startService, waitFor } from "./support/index.js";
import { fileSha, listFiles, producerEnv, sha256 } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// The dashboard at GET / of the built gateway: how it is served, and the page itself driven in a real
// Chromium (Debian's package) against a real gateway, NATS and producer.

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CSP = "default-src 'self'; connect-src 'self' ws: wss:";
const XSS_NAME = "<img src=x onerror=alert(1)>.txt";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-dashboard-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 120_000,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-default-apps",
      "--disable-sync",
      "--no-first-run",
      "--disable-dev-shm-usage",
    ],
  });
  return Object.assign(browser, { [Symbol.asyncDispose]: () => browser.close() });
}

/** The page's text for `selector` once it exists (empty string when it does not). */
async function textOf(page: Page, selector: string): Promise<string> {
  const loc = page.locator(selector);
  return (await loc.count()) > 0 ? ((await loc.first().textContent()) ?? "") : "";
}

describe("gateway: dashboard", () => {
  it("GET / and its assets are served with a strict CSP; nothing else is, and no directory is listed", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    });
    const page = await fetch(`${gw.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.headers.get("content-security-policy")).toContain(CSP);
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/assets/dashboard.js">');
    // Shipped in the package, no CDN: no absolute URL anywhere in the page or its assets.
    const assets = ["/assets/dashboard.js", "/assets/dashboard.css"];
    for (const path of assets) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-security-policy"), path).toContain(CSP);
      expect(res.headers.get("content-type"), path).toMatch(path.endsWith(".js") ? /javascript/ : /^text\/css/);
      expect(await res.text(), path).not.toMatch(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);
    }
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);

    for (const path of ["/assets/", "/assets", "/assets/nope.js", "/assets/../package.json", "/static/index.html"]) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.json(), path).toMatchObject({ code: "NOT_FOUND" });
    }
    // The page itself holds no data: the API behind it still wants a key.
    expect((await fetch(`${gw.url}/api/v1/files`)).status).toBe(401);
    // The image's `pnpm deploy` copies what package.json "files" lists: the assets must be in it.
    const manifest = JSON.parse(await readFile(join(repoRoot, "packages/gateway/package.json"), "utf8")) as {
      files: string[];
    };
    expect(manifest.files).toContain("static");
  });

  it("in Chromium: a key, an upload through the form, the file live to `delivered`, its record, jobs; text only, one origin", async (ctx) => {
    if (!existsSync(CHROMIUM)) {
      ctx.skip(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
    }
    await using nats = await startNats();
    const jobRoot = join(root, "exports");
    await mkdir(join(jobRoot, "batch"), { recursive: true });
    await writeFile(join(jobRoot, "batch", "a.bin"), randomBytes(3000));
    await writeFile(join(jobRoot, "batch", "b.bin"), randomBytes(5000));
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      GATEWAY_JOB_ROOTS: jobRoot,
      LOG_LEVEL: "info",
    });
    const out = join(root, "out");
    await using producer = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none" }));
    await producer.waitForLog((l) => l.msg === "consuming files", 30_000, "producer ready");

    await using browser = await launchChromium();
    const page = await browser.newPage();
    page.setDefaultTimeout(60_000);
    const requests: string[] = [];
    const dialogs: string[] = [];
    const problems: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("websocket", (ws) => requests.push(ws.url()));
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()} (${m.location().url})`);
    });

    await page.goto(`${gw.url}/`);
    expect(await page.locator("#app").isHidden()).toBe(true);
    await page.fill("#key-input", KEYS.upload);
    await page.click("#key-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    // Live updates are on before anything is uploaded, so every state change is seen.
    await waitFor(async () => (await textOf(page, "#connection")) === "live", {
      timeoutMs: 30_000,
      message: "the WebSocket connected",
    });
    expect(await page.evaluate(() => sessionStorage.getItem("filerelay.apiKey"))).toBe(KEYS.upload);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);

    // Two files in one multipart upload, one of them named like markup.
    const report = Buffer.from("id,amount\n1,10\n2,20\n");
    const hostile = randomBytes(2048);
    await page.setInputFiles("#upload-files", [
      { name: "report.csv", mimeType: "text/csv", buffer: report },
      { name: XSS_NAME, mimeType: "text/plain", buffer: hostile },
    ]);
    await page.click("#upload-form button[type=submit]");
    await page.locator("#upload-result tbody tr").nth(1).waitFor();
    expect(await textOf(page, "#upload-status")).toBe("Uploaded 2 file(s).");
    const uploaded = await Promise.all(
      (await page.locator("#upload-result tbody tr").all()).map(async (r) => ({
        id: (await r.getAttribute("data-file-id")) ?? "",
        name: await r.locator(".filename").textContent(),
      })),
    );
    expect(uploaded.map((u) => u.name)).toEqual(["report.csv", XSS_NAME]);
    const [csv, xss] = uploaded;
    expect(await textOf(page, `#upload-result tr[data-file-id="${csv!.id}"]`)).toContain(sha256(report));

    // The list follows the WebSocket: `delivered` and the location appear without a reload.
    const row = `#files tr[data-file-id="${csv!.id}"]`;
    const rowText = await waitFor(
      async () => {
        const t = await textOf(page, row);
        return t.includes("delivered") && t.includes("file://") ? t : undefined;
      },
      { timeoutMs: 60_000, message: "the uploaded file's row shows delivered and its location" },
    );
    expect(await page.locator(`#live-events li[data-file-id="${csv!.id}"][data-state="delivered"]`).count()).toBe(1);
    const record = (await (await fetch(`${gw.url}/api/v1/files/${csv!.id}`, { headers: auth(KEYS.read) })).json()) as {
      deliveries: Record<string, { location: string }>;
    };
    const location = record.deliveries["file-producers"]!.location;
    expect(rowText).toContain("report.csv");
    expect(rowText).toContain(`file-producers: ${location}`);
    expect(await textOf(page, `${row} td:nth-child(3)`)).toBe("20 B");
    const written = await listFiles(out);
    const mine = written.find((f) => location.endsWith(f));
    expect(mine, `${location} among ${written.join(", ")}`).toBeDefined();
    expect(await fileSha(join(out, mine!))).toBe(sha256(report));
    // Nothing left in flight once both files are final.
    await waitFor(async () => (await page.locator("#live-files li").count()) === 0, {
      message: "no file left in flight",
    });

    // The record: facts, where it landed, the timeline.
    await page.click(row);
    await page.locator("#record").waitFor({ state: "visible" });
    await waitFor(async () => (await textOf(page, "#record h3")) === "report.csv", { message: "the record opened" });
    const recordText = await textOf(page, "#record");
    expect(recordText).toContain(csv!.id);
    expect(recordText).toContain(sha256(report));
    expect(recordText).toContain(location);
    expect(recordText).toContain("Children (0)");
    expect(await page.locator("#record .timeline li").count()).toBeGreaterThanOrEqual(2);

    // The file named like markup is text everywhere: in the list, the live log and its record.
    const xssRow = `#files tr[data-file-id="${xss!.id}"]`;
    await waitFor(async () => (await textOf(page, `${xssRow} .filename`)) === XSS_NAME, {
      message: "the markup-named file listed as text",
    });
    await page.click(xssRow);
    await waitFor(async () => (await textOf(page, "#record h3")) === XSS_NAME, { message: "its record, as text" });
    expect(await page.locator("img").count()).toBe(0);
    expect(await page.locator("[onerror]").count()).toBe(0);

    // Upload jobs: one started through the API, listed; its row filters the files list to the job.
    const created = await fetch(`${gw.url}/api/v1/uploads/`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: JSON.stringify({ upload_id: "nightly-7", source_folder: join(jobRoot, "batch"), pattern: "*.bin" }),
    });
    expect(created.status, await created.clone().text()).toBe(201);
    const jobRow = '#jobs tr[data-upload-id="nightly-7"]';
    await waitFor(
      async () => {
        await page.click("#jobs-refresh");
        return (await textOf(page, jobRow)).includes("COMPLETED");
      },
      { timeoutMs: 60_000, intervalMs: 500, message: "the job listed as COMPLETED" },
    );
    expect(await textOf(page, jobRow)).toContain("2 done, 0 failed of 2");
    await page.click(jobRow);
    await waitFor(
      async () => {
        const names = await page.locator("#files tbody .filename").allTextContents();
        return names.length === 2 && names.every((n) => n.endsWith(".bin"));
      },
      { message: "the files list filtered to the job's two files" },
    );

    // API errors are shown as they are: a read-only key may not upload.
    await page.click("#forget-key");
    expect(await page.evaluate(() => sessionStorage.getItem("filerelay.apiKey"))).toBeNull();
    await page.fill("#key-input", KEYS.read);
    await page.click("#key-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    await page.setInputFiles("#upload-files", [{ name: "denied.txt", mimeType: "text/plain", buffer: report }]);
    await page.click("#upload-form button[type=submit]");
    await waitFor(async () => (await textOf(page, "#error")).includes("403 AUTH_FORBIDDEN"), {
      message: "the 403 shown",
    });
    expect(await textOf(page, "#error")).toContain("may not upload");
    // The files list loading again (as it does after every update) keeps the refusal in view:
    // rows marked now are replaced, and the error line is settled, in the same step of the page.
    await page.locator("#files tbody tr").evaluateAll((rows: { setAttribute(name: string, value: string): void }[]) => {
      for (const r of rows) r.setAttribute("data-old", "");
    });
    await page.click("#filters button[type=submit]");
    await waitFor(
      async () =>
        (await page.locator("#files tbody tr").count()) > 0 &&
        (await page.locator("#files tbody tr[data-old]").count()) === 0,
      {
        message: "the files list drawn again",
      },
    );
    expect(await textOf(page, "#error")).toContain("may not upload");
    // A wrong key: back to the key form, with the reason.
    await page.click("#forget-key");
    await page.fill("#key-input", "not-a-key");
    await page.click("#key-form button[type=submit]");
    await page.locator("#key-form").waitFor({ state: "visible" });
    await waitFor(async () => (await textOf(page, "#error")).includes("401"), { message: "the 401 shown" });

    expect(dialogs).toEqual([]);
    // Chromium logs failed requests (the deliberate 401/403 above) as console errors; anything else is a fault.
    expect(problems.filter((p) => !/status of 40[13]/.test(p))).toEqual([]);
    const origin = new URL(gw.url);
    const foreign = requests.filter((u) => new URL(u).host !== origin.host);
    expect(foreign).toEqual([]);
    expect(requests.some((u) => u.startsWith(`ws://${origin.host}/ws?`))).toBe(true);
    // The key travels in a URL only on the WebSocket (browsers cannot set its headers).
    expect(requests.filter((u) => u.includes(KEYS.upload) && !u.startsWith("ws:"))).toEqual([]);
  });
});
