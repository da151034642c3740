/**
 * Links against a real local WebSocket server (`Deno.serve` with its own upgrade, standing in for
 * a peer's front; tests/integration/cluster_link_test.ts uses real servers).
 */
import assert from "node:assert/strict";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import { ClusterKey, requestSigned } from "./cluster_key.ts";
import { Hmac } from "./hmac.ts";
import {
  LINK_MAX_BODY_CHARS,
  LINK_PATH,
  LinkClosedError,
  LinkPool,
  type LinkServerSocket,
  LinkTimeoutError,
  serveLink,
} from "./link.ts";
import { serveSigned, signedPost } from "./rpc.ts";

const PATH = "/test/rpc";

/** The peer: links on LINK_PATH (unless refused), plain POSTs on PATH, both with `handle`. */
function peer(
  handle: (req: Request) => Promise<Response>,
  options: { refuseLinks?: boolean } = {},
) {
  const state = {
    upgrades: 0,
    posts: 0,
    sockets: [] as WebSocket[],
    invalid: [] as string[],
    closes: [] as number[],
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === LINK_PATH) {
      state.upgrades++;
      if (options.refuseLinks) return new Response("Not found", { status: 404 });
      const { socket, response } = Deno.upgradeWebSocket(req);
      state.sockets.push(socket);
      socket.onclose = (e) => state.closes.push(e.code);
      const wrapped: LinkServerSocket = {
        get isOpen() {
          return socket.readyState === WebSocket.OPEN;
        },
        send: (text) => socket.send(text),
        close: (code, reason) => socket.close(code, reason),
        set onmessage(f: LinkServerSocket["onmessage"]) {
          socket.onmessage = (e) => f?.({ data: e.data });
        },
        get onmessage() {
          return null;
        },
      };
      serveLink(wrapped, {
        paths: [PATH],
        handle,
        onInvalid: (r) => state.invalid.push(r),
      });
      return response;
    }
    state.posts++;
    return handle(req);
  });
  return { url: `http://127.0.0.1:${server.addr.port}${PATH}`, server, state };
}

const echo = async (req: Request) =>
  new Response(await req.text(), {
    status: 200,
    headers: { "x-p2p-response-signature": `sig-of-${req.headers.get("x-p2p-nonce")}` },
  });

Deno.test("link: concurrent calls on one link each get their own answer, whatever the order", async () => {
  const metrics = new Metrics();
  // Answers come back in reverse order of arrival.
  let n = 0;
  const p = peer(async (req) => {
    const body = await req.text();
    await new Promise((r) => setTimeout(r, 50 - 2 * n++));
    return await echo(new Request(req.url, { method: "POST", body, headers: req.headers }));
  });
  const pool = new LinkPool({ paths: [PATH], metrics });
  try {
    const answers = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => pool.post(p.url, { "x-p2p-nonce": `n${i}` }, `body ${i}`, 5000),
      ),
    );
    for (const [i, a] of answers.entries()) {
      assert.ok(a, "sent by fetch instead");
      assert.equal(a.text, `body ${i}`);
      assert.equal(a.signature, `sig-of-n${i}`);
      assert.equal(a.status, 200);
    }
    assert.equal(p.state.upgrades, 1, "one link for all");
    assert.equal(p.state.posts, 0);
    assert.equal(metrics.get("p2pchat_cluster_link_calls_total"), 20);
  } finally {
    pool.close();
    await p.server.shutdown();
  }
});

Deno.test("link: an answer far larger than any request comes back whole (a flooded mailbox's fetch)", async () => {
  const big = "m".repeat(5 * 1024 * 1024);
  const p = peer(() => Promise.resolve(new Response(big, { status: 200 })));
  const pool = new LinkPool({ paths: [PATH] });
  try {
    const a = await pool.post(p.url, {}, "{}", 10_000);
    assert.equal(a?.text.length, big.length);
    assert.equal(p.state.posts, 0);
  } finally {
    pool.close();
    await p.server.shutdown();
  }
});

Deno.test("link: a peer that refuses links, a long body or another path go by fetch", async () => {
  const metrics = new Metrics();
  const p = peer(echo, { refuseLinks: true });
  const pool = new LinkPool({ paths: [PATH], metrics });
  try {
    assert.equal(await pool.post(p.url, {}, "x", 5000), undefined);
    assert.equal(await pool.post(p.url, {}, "x", 5000), undefined);
    assert.equal(p.state.upgrades, 1, "asked again right after a refusal");
    assert.equal(metrics.get("p2pchat_cluster_link_fallbacks_total", { reason: "refused" }), 2);
    const open = peer(echo);
    try {
      const long = "x".repeat(LINK_MAX_BODY_CHARS + 1);
      assert.equal(await pool.post(open.url, {}, long, 5000), undefined);
      assert.equal(await pool.post(open.url.replace(PATH, "/other/rpc"), {}, "x", 5000), undefined);
      assert.equal(open.state.upgrades, 0);
    } finally {
      await open.server.shutdown();
    }
  } finally {
    pool.close();
    await p.server.shutdown();
  }
});

Deno.test("link: no answer in time is a timeout; a link that went silent is replaced for the next call", async () => {
  let silent = true;
  const p = peer(async (req) => {
    if (silent) return await new Promise<Response>(() => {}); // never answers
    return await echo(req);
  });
  const pool = new LinkPool({ paths: [PATH] });
  try {
    await assert.rejects(pool.post(p.url, {}, "x", 200), LinkTimeoutError);
    silent = false;
    const a = await pool.post(p.url, { "x-p2p-nonce": "after" }, "y", 5000);
    assert.equal(a?.text, "y");
    assert.equal(p.state.upgrades, 2, "the silent link was used again");
  } finally {
    pool.close();
    await p.server.shutdown();
  }
});

Deno.test("link: a link the peer closes fails its waiting calls at once, and the next call opens a new one", async () => {
  let hold = true;
  const p = peer(async (req) => {
    if (hold) return await new Promise<Response>(() => {});
    return await echo(req);
  });
  const pool = new LinkPool({ paths: [PATH] });
  try {
    const waiting = pool.post(p.url, {}, "x", 10_000);
    while (p.state.sockets.length === 0 || p.state.sockets[0]!.readyState !== WebSocket.OPEN) {
      await new Promise((r) => setTimeout(r, 5));
    }
    // Give the request time to reach the peer, then the peer goes away.
    await new Promise((r) => setTimeout(r, 20));
    p.state.sockets[0]!.close(1001, "going away");
    await assert.rejects(waiting, LinkClosedError);
    hold = false;
    assert.equal((await pool.post(p.url, {}, "z", 5000))?.text, "z");
    assert.equal(p.state.upgrades, 2);
  } finally {
    pool.close();
    await p.server.shutdown();
  }
});

Deno.test("link: a frame that is not a well-formed request closes the link, and the handler never sees it", async () => {
  let handled = 0;
  const p = peer(async (req) => {
    handled++;
    return await echo(req);
  });
  try {
    const bad = [
      "no header line",
      "not json\n{}",
      `${JSON.stringify({ id: -1, path: PATH, headers: {} })}\n{}`,
      `${JSON.stringify({ id: 1, path: "/admin", headers: {} })}\n{}`,
      `${JSON.stringify({ id: 1, path: PATH, headers: { cookie: "x" } })}\n{}`,
      `${JSON.stringify({ id: 1, path: PATH, headers: [] })}\n{}`,
      // A value no HTTP header may hold (it would throw where the request is built).
      `${JSON.stringify({ id: 1, path: PATH, headers: { "x-p2p-from": "a\nb" } })}\n{}`,
      `${JSON.stringify({ id: 1, path: PATH, headers: { "x-p2p-nonce": "\u0000" } })}\n{}`,
    ];
    for (const frame of bad) {
      const ws = new WebSocket(p.url.replace("http:", "ws:").replace(PATH, LINK_PATH));
      await new Promise((r) => ws.onopen = r);
      const closed = new Promise<number>((r) => ws.onclose = (e) => r(e.code));
      ws.send(frame);
      assert.equal(await closed, 1008, frame);
    }
    assert.equal(handled, 0);
    assert.equal(p.state.invalid.length, bad.length);
  } finally {
    await p.server.shutdown();
  }
});

Deno.test("signed RPC over a link: answered as over HTTP; a forged or replayed request changes nothing", async () => {
  const hmac = new Hmac("a-test-cluster-secret-of-some-length");
  const server: { key?: ClusterKey } = {};
  let handled = 0;
  const p = peer((req) =>
    serveSigned(req, {
      name: "test",
      maxBodyBytes: 1024,
      parse: (text) => JSON.parse(text) as unknown,
      handle: () => ({ handled: ++handled }),
    }, { key: server.key!, metrics: new Metrics(), log: silentLog })
  );
  const address = p.url.replace(PATH, "");
  server.key = new ClusterKey(hmac, address);
  const caller = new ClusterKey(hmac, "http://127.0.0.1:1");
  caller.links = new LinkPool({ paths: [PATH] });
  const stranger = new ClusterKey(new Hmac("another-secret-of-some-length!!"), "http://x:1");
  stranger.links = new LinkPool({ paths: [PATH] });
  try {
    const answer = await signedPost(caller, p.url, "{}", 5000);
    assert.deepEqual(JSON.parse(answer.text), { handled: 1 });
    assert.equal(p.state.posts, 0, "went by fetch");
    await assert.rejects(signedPost(stranger, p.url, "{}", 5000), /not signed with this cluster/);
    assert.equal(handled, 1, "a request with another secret was handled");
    // A captured request sent again on a link: refused as a replay.
    const replayed = new Promise<string>((resolve) => {
      const ws = new WebSocket(p.url.replace("http:", "ws:").replace(PATH, LINK_PATH));
      // A request signed with the secret, sent twice as a replaying eavesdropper would.
      ws.onopen = async () => {
        const time = String(Date.now());
        const nonce = "fixed-nonce-1";
        const signature = await hmac.sign(
          requestSigned("POST", p.url, "http://127.0.0.1:1", time, nonce, "{}"),
        );
        const headers = {
          "x-p2p-from": "http://127.0.0.1:1",
          "x-p2p-to": p.url,
          "x-p2p-time": time,
          "x-p2p-nonce": nonce,
          "x-p2p-signature": signature,
        };
        const answers: string[] = [];
        ws.onmessage = (e) => {
          answers.push(String(e.data));
          if (answers.length === 2) {
            ws.close();
            resolve(answers.join("\n---\n"));
          }
        };
        ws.send(`${JSON.stringify({ id: 1, path: PATH, headers })}\n{}`);
        ws.send(`${JSON.stringify({ id: 2, path: PATH, headers })}\n{}`);
      };
    });
    const both = await replayed;
    assert.match(both, /"status":200/);
    assert.match(both, /"status":401[\s\S]*Replayed request/);
    assert.equal(handled, 2, "the replay was handled");
  } finally {
    caller.links.close();
    stranger.links.close();
    await p.server.shutdown();
  }
});
