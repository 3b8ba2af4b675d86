import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import fastifyStatic from "@fastify/static";

/**
 * The dashboard's files: static/ next to dist/ in the package (listed in
 * package.json "files", so a `pnpm deploy` of the gateway carries them).
 */
export const DASHBOARD_ROOT = fileURLToPath(new URL("../static/", import.meta.url));

/**
 * Only the gateway's own scripts, styles and API; the WebSocket scheme is
 * listed because older browsers do not match ws:/wss: against 'self'. The
 * page renders API data as text only, and this keeps an injected script or
 * an off-site request from running even if that ever slipped.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "connect-src 'self' ws: wss:",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": DASHBOARD_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // Revalidated on every load (ETag): a gateway upgrade never serves a stale page against a newer API.
  "cache-control": "no-cache",
};

/**
 * GET / (the dashboard) and its assets under /assets/. Each file gets its own
 * route, found when the gateway starts: anything else under / is the API's
 * JSON 404, and no directory is ever listed. Open like /healthz: the page
 * holds no data; it asks for an API key and calls the API with it.
 */
export async function registerDashboard(app: FastifyInstance, root: string = DASHBOARD_ROOT): Promise<void> {
  // Its own scope, so the headers hook covers the dashboard's routes only.
  await app.register(async (scope) => {
    scope.addHook("onSend", async (_request, reply, payload) => {
      void reply.headers(SECURITY_HEADERS);
      return payload;
    });
    await scope.register(fastifyStatic, {
      root,
      prefix: "/",
      wildcard: false,
      index: "index.html",
      list: false,
      decorateReply: false,
      serveDotFiles: false,
      dotfiles: "ignore",
      cacheControl: false,
    });
  });
}
