/**
 * Fuzzing live servers: generated browser frames (valid, mutated and random) over many WebSocket
 * connections, and RPC bodies (unsigned, and signed with the cluster secret) to every signed
 * endpoint, against a real two-server ring. The servers must never crash, every answer must be
 * typed (a frame with a known `type`; an `error` with a `code`; HTTP answers as JSON), and every
 * line the servers log must be JSON. `P2P_FUZZ_FRAMES` sets how many (default 100,000); the seed
 * is printed so a failure can be replayed with `P2P_FUZZ_SEED`.
 */
import assert from "node:assert/strict";
import { ClusterKey, Hmac, signedPost } from "../../server/cluster/mod.ts";
import { CLIENT_TYPES as BROWSER_TYPES } from "../../shared/protocol.ts";
import { startCluster, TEST_SECRET } from "../support/server_process.ts";

const TOTAL = Number(Deno.env.get("P2P_FUZZ_FRAMES") ?? "100000");
const SEED = Number(Deno.env.get("P2P_FUZZ_SEED") ?? String(Date.now() % 1_000_000));
const CONNECTIONS = 16;
/** Share of the total sent as RPC bodies rather than browser frames. */
const RPC_SHARE = 0.1;

/** Mulberry32: a small seeded generator, so a failing run can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, pick };
}
type Rng = ReturnType<typeof rng>;

const NAMES = ["alice", "bob", "carol", "fuzz-0", "x", "", "a".repeat(40), "ünï", "root"];
/** Every type a browser may send, two it may not (servers' own), and one that does not exist. */
const CLIENT_TYPES = [...BROWSER_TYPES, "session_started", "handover_signal", "nope"];

function weird(r: Rng): unknown {
  return r.pick<unknown>([
    null,
    true,
    -1,
    0,
    1e308,
    Number.MAX_SAFE_INTEGER + 2,
    "",
    "x".repeat(r.int(70_000)),
    "\u0000\ud800",
    [],
    [1, "2", { a: 3 }],
    {},
    { "__proto__": { polluted: true } },
    { nested: { deeper: { deepest: [{}] } } },
    r.pick(NAMES),
  ]);
}

/** A plausible client frame of a random type. */
function validFrame(r: Rng, reqId: number): Record<string, unknown> {
  const type = r.pick(BROWSER_TYPES);
  const to = r.pick(NAMES.slice(0, 4));
  switch (type) {
    case "register":
    case "login":
      // bcrypt is the expensive part: keep these rare.
      return {
        v: 1,
        type: r.next() < 0.02 ? type : "ping",
        reqId,
        username: to,
        secret: "s".repeat(43),
      };
    case "resume":
      return { v: 1, type, reqId, token: "a.b" };
    case "signal":
      return { v: 1, type, to, data: { sdp: "v=0", n: r.int(9) } };
    case "relay":
      return { v: 1, type, to, payload: "p".repeat(r.int(200)) };
    case "mail_send":
      return {
        v: 1,
        type,
        reqId,
        to,
        messages: [{
          id: crypto.randomUUID(),
          sentAt: Date.now(),
          envelope: "e".repeat(1 + r.int(300)),
        }],
      };
    case "mail_ack":
      return { v: 1, type, reqId, messages: [{ id: crypto.randomUUID(), from: to }] };
    case "get_keys":
      return { v: 1, type, reqId, username: to };
    case "watch":
      return { v: 1, type, reqId, usernames: NAMES.slice(0, 1 + r.int(NAMES.length)) };
    default:
      return { v: 1, type, reqId };
  }
}

/** `frame` with one random change: a field removed, retyped, renamed, or added. */
function mutate(r: Rng, frame: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = structuredClone(frame);
  const keys = Object.keys(copy);
  switch (r.int(5)) {
    case 0:
      delete copy[r.pick(keys)];
      break;
    case 1:
      copy[r.pick(keys)] = weird(r);
      break;
    case 2:
      copy.type = r.pick(CLIENT_TYPES);
      break;
    case 3:
      copy[`extra${r.int(3)}`] = weird(r);
      break;
    default:
      copy.v = r.pick([0, 2, "1", null]);
  }
  return copy;
}

/** Random text that is mostly not JSON. */
function garbage(r: Rng): string {
  const n = r.int(300);
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(r.int(0x3000));
  return r.pick([s, `{"v":1,"type":`, "[]", "null", "1", `"${s}"`, "{".repeat(2000)]);
}

/** How many connections the servers closed, by close code. */
const closes = new Map<number, number>();

interface Conn {
  ws: WebSocket;
  replies: number;
  untyped: string[];
  closed: boolean;
  pongs: Map<number, () => void>;
}

function open(url: string): Promise<Conn> {
  const ws = new WebSocket(url.replace(/^http/, "ws") + "/ws");
  const conn: Conn = { ws, replies: 0, untyped: [], closed: false, pongs: new Map() };
  ws.onmessage = (e) => {
    conn.replies++;
    try {
      const f = JSON.parse(String(e.data));
      if (typeof f?.type !== "string") conn.untyped.push(String(e.data).slice(0, 200));
      else if (f.type === "error" && typeof f.code !== "string") {
        conn.untyped.push(String(e.data).slice(0, 200));
      }
      if (f?.type === "pong") conn.pongs.get(f.reqId)?.();
    } catch {
      conn.untyped.push(String(e.data).slice(0, 200));
    }
  };
  ws.onclose = (e) => {
    closes.set(e.code, (closes.get(e.code) ?? 0) + 1);
    conn.closed = true;
    for (const done of conn.pongs.values()) done();
  };
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(conn);
    ws.onerror = () => reject(new Error(`Cannot open a WebSocket to ${url}`));
  });
}

/** Resolves once the server has answered a ping sent after everything before it (or closed). */
function drained(conn: Conn, reqId: number): Promise<void> {
  if (conn.closed) return Promise.resolve();
  const done = new Promise<void>((resolve) => conn.pongs.set(reqId, resolve));
  conn.ws.send(JSON.stringify({ v: 1, type: "ping", reqId }));
  return done;
}

Deno.test(`fuzz: ${TOTAL} generated frames and RPC bodies leave the servers up, typed and logging JSON`, async () => {
  console.log(`fuzz seed ${SEED} (replay with P2P_FUZZ_SEED=${SEED})`);
  const r = rng(SEED);
  const servers = await startCluster(2, {
    env: { P2P_FRAME_RATE: "100000", P2P_BCRYPT_COST: "10" },
  });
  const conns: Conn[] = [];
  try {
    for (let i = 0; i < CONNECTIONS; i++) conns.push(await open(servers[i % 2]!.url));
    const rpcTotal = Math.floor(TOTAL * RPC_SHARE);
    const frameTotal = TOTAL - rpcTotal;
    let sent = 0;
    let reqId = 1;
    while (sent < frameTotal) {
      // A burst on every connection, then wait until each has worked through it.
      for (const c of conns) {
        if (c.closed) continue;
        for (let i = 0; i < 200 && sent < frameTotal; i++, sent++) {
          const roll = r.next();
          const text = roll < 0.4
            ? JSON.stringify(validFrame(r, reqId++))
            : roll < 0.85
            ? JSON.stringify(mutate(r, validFrame(r, reqId++)))
            : garbage(r);
          c.ws.send(text);
        }
      }
      await Promise.all(conns.map((c) => drained(c, 1_000_000_000 + reqId++)));
      // A connection the server closed (an abusive one) is replaced, so the load goes on.
      for (let i = 0; i < conns.length; i++) {
        if (conns[i]!.closed) conns[i] = await open(servers[i % 2]!.url);
      }
    }
    // RPC bodies: unsigned ones, and signed ones (a member's key) with mutated bodies.
    const member = new ClusterKey(new Hmac(TEST_SECRET), "http://127.0.0.1:9");
    const endpoints = ["/cluster/rpc", "/replication/rpc", "/ring/rpc"];
    const httpUntyped: string[] = [];
    let rpcSent = 0;
    const rpcOne = async () => {
      const server = r.pick(servers);
      const url = server.url + r.pick(endpoints);
      // Only loopback addresses ever appear, so no server is led to contact anything else.
      const deliver = {
        v: 1,
        type: "deliver",
        to: r.pick(NAMES),
        frame: { v: 1, type: "signal", from: "fuzz", data: {} },
      };
      const presence = {
        v: 1,
        type: "presence",
        username: r.pick(NAMES),
        home: "http://127.0.0.1:9",
        online: r.next() < 0.5,
        updatedAt: Date.now(),
      };
      const body = r.next() < 0.2
        ? garbage(r)
        : JSON.stringify(mutate(r, r.pick([deliver, presence])));
      let status: number;
      let text: string;
      if (r.next() < 0.5) {
        const res = await fetch(url, { method: "POST", body });
        status = res.status;
        text = await res.text();
      } else {
        try {
          ({ status, text } = await signedPost(member, url, body, 10_000));
        } catch (err) {
          // A refusal (421: addressed to another server) is still a typed, signed answer.
          httpUntyped.push(`signed POST failed: ${(err as Error).message}`);
          return;
        }
      }
      try {
        const parsed = JSON.parse(text);
        if (typeof parsed !== "object" || parsed === null) throw new Error("not an object");
        if (status >= 400 && (parsed.type !== "error" || typeof parsed.code !== "string")) {
          throw new Error("untyped refusal");
        }
      } catch (err) {
        httpUntyped.push(`${status} ${(err as Error).message}: ${text.slice(0, 200)}`);
      }
    };
    while (rpcSent < rpcTotal) {
      const batch = Math.min(50, rpcTotal - rpcSent);
      await Promise.all(Array.from({ length: batch }, rpcOne));
      rpcSent += batch;
    }
    const replies = conns.reduce((n, c) => n + c.replies, 0);
    const untyped = conns.flatMap((c) => c.untyped);
    console.log(
      `fuzz: ${frameTotal} frames (${replies} replies), ${rpcTotal} RPC bodies, ${untyped.length} untyped frames, ${httpUntyped.length} untyped HTTP answers; connections closed by code: ${
        JSON.stringify(Object.fromEntries(closes))
      }`,
    );
    assert.deepEqual(untyped.slice(0, 5), [], "untyped WebSocket answers");
    // Signed POSTs to an endpoint of the other server are refused as misdirected (421): typed.
    assert.deepEqual(
      httpUntyped.filter((e) => !/refused|421|Request meant for/.test(e)).slice(0, 5),
      [],
      "untyped HTTP answers",
    );
    for (const s of servers) {
      const failed = s.logs().split("\n").filter((l) => l.includes('"http_handler_failed"'));
      assert.deepEqual(failed.slice(0, 3), [], `${s.url}: requests failed inside the server`);
      const health = await fetch(`${s.url}/healthz`);
      assert.equal(health.status, 200, `${s.url} is down`);
      await health.body?.cancel();
      const notJson = s.logs().split("\n").filter((line) => {
        if (line.trim() === "") return false;
        try {
          JSON.parse(line);
          return false;
        } catch {
          return true;
        }
      });
      assert.deepEqual(notJson.slice(0, 5), [], `${s.url} logged non-JSON lines`);
    }
  } finally {
    for (const c of conns) c.ws.close();
    await Promise.all(servers.map((s) => s.stop()));
  }
});
