/** Serves the built PWA from a directory, refusing paths outside it. */

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".webmanifest": "application/manifest+json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".map": "application/json",
  ".ico": "image/x-icon",
};

/** Headers on every response: cross-origin isolation gives `performance.now()` full resolution. */
export const ISOLATION_HEADERS: Record<string, string> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/**
 * The security headers of the PWA's pages: a Content-Security-Policy it runs under (scripts
 * from this origin only, no inline script; WebAssembly for sql.js; WebSockets to the ring's
 * servers for fail-over), no framing, no referrer, and HSTS when served over TLS.
 */
export function pageHeaders(options: {
  /** Origins the page may open WebSockets and requests to, besides its own. */
  connectOrigins: readonly string[];
  isTls: boolean;
}): Record<string, string> {
  const connect = new Set<string>(["'self'"]);
  for (const origin of options.connectOrigins) {
    connect.add(origin);
    connect.add(origin.replace(/^http/, "ws"));
  }
  const csp = [
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    `connect-src ${[...connect].join(" ")}`,
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
  return {
    ...ISOLATION_HEADERS,
    "content-security-policy": csp,
    "x-frame-options": "DENY",
    ...(options.isTls ? { "strict-transport-security": "max-age=31536000" } : {}),
  };
}

/**
 * Returns the response for `pathname` from `root` with `headers` added, or undefined when no
 * such file exists.
 */
export async function serveStatic(
  root: string,
  pathname: string,
  headers: Record<string, string> = ISOLATION_HEADERS,
): Promise<Response | undefined> {
  let path: string;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    return undefined;
  }
  if (path === "/" || path === "") path = "/index.html";
  if (path.includes("\0") || path.split("/").some((part) => part === "..")) return undefined;
  const file = root.replace(/\/$/, "") + path;
  let body: Uint8Array;
  try {
    body = await Deno.readFile(file);
  } catch {
    return undefined;
  }
  const ext = path.slice(path.lastIndexOf("."));
  const revalidate = path === "/index.html" || path === "/sw.js" || ext === ".webmanifest";
  return new Response(body as Uint8Array<ArrayBuffer>, {
    headers: {
      ...headers,
      "content-type": TYPES[ext] ?? "application/octet-stream",
      "cache-control": revalidate ? "no-cache" : "public, max-age=300",
    },
  });
}
