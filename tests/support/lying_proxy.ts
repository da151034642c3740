/**
 * A deliberately lying server for browser tests of end-to-end trust (DESIGN §4, issue 12): an
 * HTTP and WebSocket proxy on loopback in front of one real server. It passes the page and every
 * frame through, records every frame in both directions, and — as told — answers `get_keys` for
 * chosen users with "no keys" or with another user's public keys (which it asks the real server
 * for itself, on the browser's own authenticated connection). It can also drop WebRTC `signal`
 * frames, so that no data channel opens and every chat message crosses the proxy where the test
 * can inspect it, and inject frames towards the browser as a compromised server would.
 */

/** What the proxy answers for one user's `get_keys`. */
export type KeysLie =
  | { kind: "no_keys" }
  | { kind: "keys_of"; user: string };

/** A started proxy; {@link LyingProxy.stop} ends it and its sockets. */
export interface LyingProxy {
  /** The proxy's own URL (`http://127.0.0.1:port`): open the app here. */
  url: string;
  /** Every text frame the browser sent (before any drop). */
  readonly fromBrowser: string[];
  /** Every text frame the real server sent (before any rewrite). */
  readonly fromServer: string[];
  /** Every `get_keys` answer the proxy rewrote, as `[username, lie kind]`. */
  readonly rewritten: Array<[string, KeysLie["kind"]]>;
  /** Drops `signal` frames both ways while true (no data channel can open). */
  dropSignals: boolean;
  /** Lies from now on about `user`'s keys (null: tells the truth again). */
  lieAbout(user: string, lie: KeysLie | null): Promise<void>;
  /** Sends `frame` to every connected browser as if the server had sent it. */
  injectToBrowser(frame: Record<string, unknown>): void;
  stop(): Promise<void>;
}

interface Pipe {
  browser: WebSocket;
  upstream: WebSocket;
  ready: Promise<void>;
  /** `get_keys` requests in flight: reqId → username. */
  keyRequests: Map<number, string>;
  /** The proxy's own requests in flight: reqId → resolver of the reply. */
  own: Map<number, (frame: Record<string, unknown>) => void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"];

/** Starts a proxy in front of the real server at `upstreamUrl` (http://host:port). */
export function startLyingProxy(upstreamUrl: string): Promise<LyingProxy> {
  const pipes = new Set<Pipe>();
  const lies = new Map<string, { lie: KeysLie; keys?: { encryption: string; signing: string } }>();
  const fromBrowser: string[] = [];
  const fromServer: string[] = [];
  const rewritten: Array<[string, KeysLie["kind"]]> = [];
  let nextOwnReqId = 9_000_000_000;

  const parse = (text: unknown): Record<string, unknown> | null => {
    if (typeof text !== "string") return null;
    try {
      const v = JSON.parse(text);
      return typeof v === "object" && v !== null ? v : null;
    } catch {
      return null;
    }
  };

  function openPipe(browser: WebSocket): void {
    const upstream = new WebSocket(upstreamUrl.replace(/^http/, "ws") + "/ws");
    const pipe: Pipe = {
      browser,
      upstream,
      ready: new Promise((resolve) => upstream.addEventListener("open", () => resolve())),
      keyRequests: new Map(),
      own: new Map(),
    };
    pipes.add(pipe);
    const closeBoth = () => {
      pipes.delete(pipe);
      for (const s of [browser, upstream]) {
        if (s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING) {
          try {
            s.close();
          } catch { /* already closing */ }
        }
      }
    };
    browser.addEventListener("close", closeBoth);
    upstream.addEventListener("close", closeBoth);
    upstream.addEventListener("error", closeBoth);
    browser.addEventListener("message", async (e) => {
      const text = String(e.data);
      fromBrowser.push(text);
      const frame = parse(text);
      if (frame?.type === "signal" && proxy.dropSignals) return;
      if (frame?.type === "get_keys" && typeof frame.reqId === "number") {
        pipe.keyRequests.set(frame.reqId, String(frame.username));
      }
      await pipe.ready;
      if (upstream.readyState === WebSocket.OPEN) upstream.send(text);
    });
    upstream.addEventListener("message", (e) => {
      const text = String(e.data);
      fromServer.push(text);
      const frame = parse(text);
      const reqId = typeof frame?.reqId === "number" ? frame.reqId : null;
      if (frame && reqId !== null && pipe.own.has(reqId)) {
        pipe.own.get(reqId)!(frame);
        pipe.own.delete(reqId);
        return;
      }
      if (frame?.type === "signal" && proxy.dropSignals) return;
      const user = reqId === null ? undefined : pipe.keyRequests.get(reqId);
      if (reqId !== null && user !== undefined) {
        pipe.keyRequests.delete(reqId);
        const lie = lies.get(user);
        if (lie && (frame?.type === "keys" || frame?.type === "error")) {
          rewritten.push([user, lie.lie.kind]);
          const answer = lie.lie.kind === "no_keys"
            ? {
              v: 1,
              type: "error",
              reqId,
              code: "unknown_user",
              message: `No public keys for "${user}"`,
            }
            : { v: 1, type: "keys", reqId, username: user, ...lie.keys };
          if (browser.readyState === WebSocket.OPEN) browser.send(JSON.stringify(answer));
          return;
        }
      }
      if (browser.readyState === WebSocket.OPEN) browser.send(text);
    });
  }

  /** Asks the real server for `user`'s keys on a browser's authenticated connection. */
  async function fetchKeys(user: string): Promise<{ encryption: string; signing: string }> {
    for (const pipe of pipes) {
      await pipe.ready;
      if (pipe.upstream.readyState !== WebSocket.OPEN) continue;
      const reqId = nextOwnReqId++;
      const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`No keys of ${user} from the server`)),
          20_000,
        );
        pipe.own.set(reqId, (f) => {
          clearTimeout(timer);
          resolve(f);
        });
        pipe.upstream.send(JSON.stringify({ v: 1, type: "get_keys", reqId, username: user }));
      });
      if (reply.type !== "keys") throw new Error(`get_keys ${user}: ${JSON.stringify(reply)}`);
      return { encryption: String(reply.encryption), signing: String(reply.signing) };
    }
    throw new Error("No browser is connected through the proxy");
  }

  const ac = new AbortController();
  let resolveUrl!: (url: string) => void;
  const listening = new Promise<string>((r) => resolveUrl = r);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: ac.signal,
    onListen: ({ port }) => resolveUrl(`http://127.0.0.1:${port}`),
  }, async (req) => {
    const url = new URL(req.url);
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      openPipe(socket);
      return response;
    }
    const headers = new Headers(req.headers);
    headers.delete("host");
    const upstream = await fetch(upstreamUrl + url.pathname + url.search, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    const out = new Headers(upstream.headers);
    for (const h of [...HOP_BY_HOP, "content-encoding"]) out.delete(h);
    return new Response(upstream.body, { status: upstream.status, headers: out });
  });

  const proxy: LyingProxy = {
    url: "",
    fromBrowser,
    fromServer,
    rewritten,
    dropSignals: false,
    async lieAbout(user, lie) {
      if (!lie) {
        lies.delete(user);
        return;
      }
      lies.set(user, {
        lie,
        ...(lie.kind === "keys_of" ? { keys: await fetchKeys(lie.user) } : {}),
      });
    },
    injectToBrowser(frame) {
      for (const p of pipes) {
        if (p.browser.readyState === WebSocket.OPEN) p.browser.send(JSON.stringify(frame));
      }
    },
    async stop() {
      for (const p of pipes) {
        try {
          p.browser.close();
          p.upstream.close();
        } catch { /* closing anyway */ }
      }
      ac.abort();
      await server.finished;
    },
  };
  return listening.then((url) => {
    proxy.url = url;
    return proxy;
  });
}
