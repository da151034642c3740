/**
 * The visualizer's HTTP face: the page at `/ring/view` (HTML, script, style), its live stream of
 * pictures at `/ring/view/stream` (server-sent events, one `picture` event per update), and the
 * signed `/ring/report` endpoint other servers' visualizers gather from. When an operator token
 * is configured, the page and the stream require it (`?token=…`, or the header
 * `x-operator-token`, or `authorization: Bearer …`); the script and style hold no data.
 */
import type { PictureSource } from "./source.ts";
import { RING_REPORT_PATH } from "./report.ts";
import { hasOperatorToken } from "../telemetry/mod.ts";

/** Path of the page. */
export const VIEW_PATH = "/ring/view";

/** Collaborators of the visualizer's handler. */
export interface VisualizerHttpDeps {
  /** The pictures to stream. */
  source: PictureSource;
  /** Serves the signed `POST /ring/report` (absent in the simulator). */
  serveReport?: (req: Request) => Promise<Response>;
}

/** Configuration of the visualizer's handler. */
export interface VisualizerHttpOptions {
  /** When set, the page and its stream require this token. @default undefined (open) */
  operatorToken?: string;
  /** Interval of keep-alive comments on idle streams, in ms. @default 15000 */
  keepAliveMs?: number;
}

const PAGE_FILES: Readonly<Record<string, [file: string, type: string]>> = {
  [VIEW_PATH]: ["index.html", "text/html; charset=utf-8"],
  [`${VIEW_PATH}/`]: ["index.html", "text/html; charset=utf-8"],
  [`${VIEW_PATH}/app.js`]: ["app.js", "text/javascript; charset=utf-8"],
  [`${VIEW_PATH}/render.js`]: ["render.js", "text/javascript; charset=utf-8"],
  [`${VIEW_PATH}/style.css`]: ["style.css", "text/css; charset=utf-8"],
};

/** Headers of every page response: nothing but this origin, and the token never leaks. */
const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/**
 * Creates the handler of the visualizer's paths: it answers those and resolves `undefined` for
 * any other request, so the server's router can fall through.
 */
export function createVisualizerHandler(
  deps: VisualizerHttpDeps,
  options: VisualizerHttpOptions = {},
): (req: Request) => Promise<Response | undefined> {
  const files = new Map<string, Uint8Array>();
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const readPage = async (file: string) => {
    let body = files.get(file);
    if (!body) {
      body = await Deno.readFile(new URL(`./page/${file}`, import.meta.url));
      files.set(file, body);
    }
    return body;
  };
  return async (req) => {
    const url = new URL(req.url);
    if (url.pathname === RING_REPORT_PATH && req.method === "POST" && deps.serveReport) {
      return await deps.serveReport(req);
    }
    if (url.pathname !== VIEW_PATH && !url.pathname.startsWith(`${VIEW_PATH}/`)) return undefined;
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed", { status: 405, headers: PAGE_HEADERS });
    }
    const isData = url.pathname === `${VIEW_PATH}/stream` || PAGE_FILES[url.pathname]?.[0] ===
        "index.html";
    if (isData && options.operatorToken && !hasOperatorToken(req, options.operatorToken)) {
      return new Response(
        "The ring view needs the operator token: add ?token=<P2P_OPERATOR_TOKEN> to the address",
        { status: 401, headers: PAGE_HEADERS },
      );
    }
    if (url.pathname === `${VIEW_PATH}/stream`) return stream(deps.source, keepAliveMs);
    const page = PAGE_FILES[url.pathname];
    if (!page) return new Response("Not found", { status: 404, headers: PAGE_HEADERS });
    const body = await readPage(page[0]);
    return new Response(req.method === "HEAD" ? null : body as Uint8Array<ArrayBuffer>, {
      headers: { ...PAGE_HEADERS, "content-type": page[1] },
    });
  };
}

/** A server-sent-event stream of `source`'s pictures, the latest one first. */
function stream(source: PictureSource, keepAliveMs: number): Response {
  const encoder = new TextEncoder();
  let cleanup = () => {};
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      let isOpen = true;
      const send = (text: string) => {
        if (!isOpen) return;
        try {
          controller.enqueue(encoder.encode(text));
        } catch {
          cleanup();
        }
      };
      const unsubscribe = source.subscribe((picture) =>
        send(`event: picture\ndata: ${JSON.stringify(picture)}\n\n`)
      );
      const keepAlive = setInterval(() => send(": keep-alive\n\n"), keepAliveMs);
      const unClose = source.onClose(() => {
        cleanup();
        try {
          controller.close();
        } catch { /* already closed */ }
      });
      cleanup = () => {
        if (!isOpen) return;
        isOpen = false;
        unsubscribe();
        unClose();
        clearInterval(keepAlive);
      };
      send("retry: 1000\n\n");
      const latest = source.latest();
      if (latest) send(`event: picture\ndata: ${JSON.stringify(latest)}\n\n`);
    },
    cancel() {
      cleanup();
    },
  });
  return new Response(body, {
    headers: {
      ...PAGE_HEADERS,
      "content-type": "text/event-stream; charset=utf-8",
      "x-accel-buffering": "no",
    },
  });
}
