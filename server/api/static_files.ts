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
};

/** Returns the response for `pathname` from `root`, or undefined when no such file exists. */
export async function serveStatic(root: string, pathname: string): Promise<Response | undefined> {
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
      ...ISOLATION_HEADERS,
      "content-type": TYPES[ext] ?? "application/octet-stream",
      "cache-control": revalidate ? "no-cache" : "public, max-age=300",
    },
  });
}
