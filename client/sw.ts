/**
 * Service worker: caches the app shell so the PWA starts offline and is installable. Shell files
 * are served network-first (so a new build arrives as soon as the server is reachable) with the
 * cache as the offline fallback, also when the network has not answered in `NETWORK_WAIT_MS`.
 * Nothing else is intercepted — in particular not `/ws`, `/healthz` or `/metrics`. `BUILD_ID` is replaced by the build, so each build gets a fresh cache.
 */

declare const BUILD_ID: string;

interface ExtendableEvent extends Event {
  waitUntil(promise: Promise<unknown>): void;
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request;
  respondWith(response: Promise<Response>): void;
}
interface NotificationEvent extends ExtendableEvent {
  readonly notification: Notification;
}
interface WindowClient {
  focus(): Promise<unknown>;
  postMessage(message: unknown): void;
}
interface WorkerScope {
  addEventListener(type: "install" | "activate", fn: (e: ExtendableEvent) => void): void;
  addEventListener(type: "fetch", fn: (e: FetchEvent) => void): void;
  addEventListener(type: "notificationclick", fn: (e: NotificationEvent) => void): void;
  skipWaiting(): Promise<void>;
  clients: {
    claim(): Promise<void>;
    matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<WindowClient[]>;
    openWindow(url: string): Promise<unknown>;
  };
  registration: { scope: string };
}

const scope = globalThis as unknown as WorkerScope;
const CACHE = `p2pchat-shell-${BUILD_ID}`;
const SHELL = [
  "./",
  "index.html",
  "app.js",
  "app.css",
  "sql-wasm.wasm",
  "manifest.webmanifest",
  "icon.svg",
  "icon-192.png",
  "icon-512.png",
];
const base = new URL(scope.registration.scope);
const shellPaths = new Set(SHELL.map((p) => new URL(p, base).pathname));

scope.addEventListener("install", (e) => {
  e.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => scope.skipWaiting()),
  );
});

scope.addEventListener("activate", (e) => {
  e.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => scope.clients.claim()),
  );
});

scope.addEventListener("fetch", (e) => {
  const req = e.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== base.origin) return;
  // Only the shell: other pages (such as the ring visualizer) are left to the network.
  if (!shellPaths.has(url.pathname)) return;
  e.respondWith(networkFirst(req));
});

/**
 * How long a shell request waits for the network before the cached copy is served, ms: a
 * network that drops packets (not refusing) would otherwise hold the offline start up for as
 * long as the browser's own timeout. The network answer still refreshes the cache when it comes.
 */
const NETWORK_WAIT_MS = 1_500;

async function networkFirst(req: Request): Promise<Response> {
  const cache = await caches.open(CACHE);
  const fromNetwork = fetch(req).then(async (res) => {
    if (res.ok) await cache.put(req, res.clone());
    return res;
  });
  const hit = await cache.match(req, { ignoreSearch: true });
  if (!hit) return fromNetwork;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<Response>((resolve) => {
    timer = setTimeout(() => resolve(hit), NETWORK_WAIT_MS);
  });
  try {
    return await Promise.race([fromNetwork.catch(() => hit), late]);
  } finally {
    clearTimeout(timer);
  }
}

// A new-message notification clicked: the app's window comes forward at that conversation (a new
// window opens at it if none is left).
scope.addEventListener("notificationclick", (e) => {
  e.notification.close();
  const data = e.notification.data as { type?: string; peer?: string } | null;
  if (data?.type !== "p2pchat-chat" || typeof data.peer !== "string") return;
  const peer = data.peer;
  e.waitUntil(
    scope.clients.matchAll({ type: "window", includeUncontrolled: true }).then(async (list) => {
      const client = list[0];
      if (client) {
        await client.focus();
        client.postMessage({ type: "p2pchat-chat", peer });
      } else {
        await scope.clients.openWindow(new URL(`./?chat=${encodeURIComponent(peer)}`, base).href);
      }
    }),
  );
});
