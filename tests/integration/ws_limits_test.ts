/**
 * WebSocket messages are capped before they are buffered, against a real server process: a
 * client announcing a 60 MiB frame, or streaming fragments without end, is closed with 1009 at
 * the cap; many such clients at once leave the server's memory within the bound README states;
 * the server keeps serving; a WebSocket upgrade can never reach the uncapped inner server.
 */
import assert from "node:assert/strict";
import { type ServerProcess, startServer, waitFor } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";
import { encodeHeader, OP, RawWebSocket } from "../support/raw_ws.ts";

/** The server's default cap (`--max-ws-message-bytes`), in bytes. */
const CAP = 196_608;
/** How much the server's resident memory may grow under the parallel attack, in MiB (README). */
const RSS_BOUND_MIB = 32;
const MIB = 1024 * 1024;

/** Resident memory (now, and the peak so far) of a process, in MiB. */
async function memoryMiB(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/** A client's frame mask: the attack frames below are announced masked, as RFC 6455 requires. */
const MASK = new Uint8Array([1, 2, 3, 4]);

/** Announces a 60 MiB frame, then streams its payload until the server ends the connection. */
async function bigFrame(url: string): Promise<{ code?: number; sentMiB: number }> {
  const ws = await RawWebSocket.connect(url);
  await ws.write(encodeHeader(OP.binary, 60 * MIB, true, MASK));
  const chunk = new Uint8Array(256 * 1024);
  let sent = 0;
  while (sent < 60 * MIB && await ws.write(chunk)) {
    sent += chunk.length;
    if (ws.events.some((e) => e.type === "end" || e.type === "close")) break;
  }
  const close = await ws.next((e) => e.type === "close" || e.type === "end");
  ws.close();
  return { code: close.type === "close" ? close.code : undefined, sentMiB: sent / MIB };
}

/** Streams 16 KiB fragments of one endless message until the server ends the connection. */
async function endlessFragments(url: string): Promise<{ code?: number; sentMiB: number }> {
  const ws = await RawWebSocket.connect(url);
  const fragment = new Uint8Array(16 * 1024).fill(0x61);
  let sent = 0;
  let opcode: number = OP.text;
  while (sent < 60 * MIB && await ws.send(opcode, fragment, false)) {
    opcode = OP.continuation;
    sent += fragment.length;
    if (ws.events.some((e) => e.type === "end" || e.type === "close")) break;
  }
  const close = await ws.next((e) => e.type === "close" || e.type === "end");
  ws.close();
  return { code: close.type === "close" ? close.code : undefined, sentMiB: sent / MIB };
}

/** A normal client still gets typed answers from `server`. */
async function stillServes(server: ServerProcess): Promise<void> {
  const client = await TestClient.connect(server.url);
  try {
    const pong = await client.request({ type: "ping" });
    assert.equal(pong.type, "pong");
  } finally {
    await client.close();
  }
}

Deno.test("ws limits: a 60 MiB frame is refused with 1009 from its header", async () => {
  const server = await startServer();
  try {
    const ws = await RawWebSocket.connect(server.url);
    // Only the header: the server must refuse before a byte of payload arrives.
    await ws.write(encodeHeader(OP.text, 60 * MIB, true, MASK));
    const close = await ws.next((e) => e.type === "close");
    assert.deepEqual(close, { type: "close", code: 1009, reason: `Message over ${CAP} bytes` });
    await ws.next((e) => e.type === "end");
    ws.close();
    await waitFor("the log line of the refusal", () => server.logs().includes('"code":1009'));
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

Deno.test("ws limits: fragments count towards the cap: up to it the socket lives, past it 1009", async () => {
  const server = await startServer();
  try {
    const ws = await RawWebSocket.connect(server.url);
    const fragment = new Uint8Array(CAP / 12).fill(0x20);
    // Twelve fragments: exactly the cap, and the connection still answers a ping.
    for (let i = 0; i < 12; i++) {
      assert.ok(await ws.send(i === 0 ? OP.text : OP.continuation, fragment, false));
    }
    assert.ok(await ws.send(OP.ping, new Uint8Array([7])));
    await ws.next((e) => e.type === "pong");
    // One byte more in the same message: refused.
    await ws.send(OP.continuation, new Uint8Array(1), false);
    const close = await ws.next((e) => e.type === "close");
    assert.equal(close.type === "close" && close.code, 1009);
    await ws.next((e) => e.type === "end");
    ws.close();
    // A message of exactly the cap, finished, reaches the hub (and is refused there as too
    // large a JSON frame, with a typed error: the byte cap is above the hub's 64 Ki chars).
    const whole = await RawWebSocket.connect(server.url);
    for (let i = 0; i < 12; i++) {
      await whole.send(i === 0 ? OP.text : OP.continuation, fragment, i === 11);
    }
    const reply = await whole.next((e) => e.type === "message");
    assert.match(String(reply.type === "message" && reply.data), /"code":"frame_too_large"/);
    whole.close();
  } finally {
    await server.stop();
  }
});

Deno.test("ws limits: 20 parallel 60 MiB frames and fragment streams leave memory bounded", async () => {
  const server = await startServer();
  try {
    // Warm up the paths the attack uses, so the baseline includes their code.
    await stillServes(server);
    await bigFrame(server.url);
    await endlessFragments(server.url);
    const before = await memoryMiB(server.pid);
    const results = await Promise.all([
      ...Array.from({ length: 10 }, () => bigFrame(server.url)),
      ...Array.from({ length: 10 }, () => endlessFragments(server.url)),
    ]);
    const after = await memoryMiB(server.pid);
    const sent = results.reduce((n, r) => n + r.sentMiB, 0);
    console.log(
      `RSS ${before.rss.toFixed(0)} MiB before, ${after.rss.toFixed(0)} MiB after, ` +
        `peak ${after.peak.toFixed(0)} MiB (peak before ${before.peak.toFixed(0)}); ` +
        `20 connections sent ${sent.toFixed(1)} MiB in all`,
    );
    for (const r of results) {
      // A reset may beat the close frame to the client; the server's log says why it closed.
      assert.ok(r.code === 1009 || r.code === undefined, `closed with ${r.code}`);
    }
    assert.ok(results.filter((r) => r.code === 1009).length >= 10, "most saw the 1009");
    assert.ok(
      after.peak - before.rss < RSS_BOUND_MIB,
      `the server grew by ${(after.peak - before.rss).toFixed(0)} MiB at its peak`,
    );
    await stillServes(server);

    // The most the attack can make the server hold: 20 unfinished messages, each at the cap.
    const holders = await Promise.all(Array.from({ length: 20 }, async () => {
      const ws = await RawWebSocket.connect(server.url);
      const fragment = new Uint8Array(CAP / 12).fill(0x20);
      for (let i = 0; i < 12; i++) await ws.send(i ? OP.continuation : OP.text, fragment, false);
      // The pong comes after the server has read every fragment before the ping.
      await ws.send(OP.ping, new Uint8Array(0));
      await ws.next((e) => e.type === "pong");
      return ws;
    }));
    const held = await memoryMiB(server.pid);
    console.log(
      `RSS ${held.rss.toFixed(0)} MiB with 20 connections each holding a ${CAP}-byte ` +
        `unfinished message (peak ${held.peak.toFixed(0)} MiB)`,
    );
    assert.ok(
      held.peak - before.rss < RSS_BOUND_MIB,
      `the server grew by ${(held.peak - before.rss).toFixed(0)} MiB at its peak`,
    );
    for (const ws of holders) ws.close();
    await stillServes(server);
    // Every refusal was logged as a JSON line, and nothing else reached stderr.
    const lines = server.logs().split("\n").filter((l) => l.trim() !== "");
    const notJson = lines.filter((l) => {
      try {
        JSON.parse(l);
        return false;
      } catch {
        return true;
      }
    });
    assert.deepEqual(notJson.slice(0, 5), []);
    assert.ok(lines.filter((l) => l.includes('"code":1009')).length >= 10);
  } finally {
    await server.stop();
  }
});

Deno.test("ws limits: an upgrade on a kept-alive HTTP connection is refused, never served", async () => {
  const server = await startServer();
  try {
    const url = new URL(server.url);
    const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
    const key = btoa("0123456789abcdef");
    const request = (path: string, extra = "") =>
      new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\n${extra}\r\n`);
    // First an ordinary request (piped to the inner server), then an upgrade on the same
    // connection: the front no longer inspects it, so the inner server must refuse it.
    await conn.write(request("/healthz"));
    await conn.write(request(
      "/ws",
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
        "Sec-WebSocket-Version: 13\r\n",
    ));
    let text = "";
    const buffer = new Uint8Array(16 * 1024);
    // A server that never answers fails the test here instead of hanging it.
    const deadline = setTimeout(() => conn.close(), 30_000);
    try {
      while ((text.match(/HTTP\/1\.1 \d{3}/g) ?? []).length < 2) {
        const n = await conn.read(buffer);
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
      }
    } finally {
      clearTimeout(deadline);
      try {
        conn.close();
      } catch { /* closed by the deadline */ }
    }
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assert.deepEqual(statuses, ["200", "426"], text);
    assert.doesNotMatch(text, /101 Switching/);
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

Deno.test("ws limits: the inner server answers only connections the front made", async () => {
  const server = await startServer();
  try {
    // The inner server's port is not published; find it among the process's listening sockets.
    const inner = await innerPort(server.pid, Number(new URL(server.url).port));
    const res = await fetch(`http://127.0.0.1:${inner}/healthz`);
    assert.equal(res.status, 403);
    await res.body?.cancel();
    // A request head over 16 KiB is refused by the front.
    const big = await fetch(`${server.url}/healthz`, { headers: { "x-big": "a".repeat(20_000) } })
      .then((r) => r.body?.cancel().then(() => r.status));
    assert.equal(big, 431);
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

/** The loopback port `pid` listens on besides `publicPort` (from /proc/net/tcp). */
async function innerPort(pid: number, publicPort: number): Promise<number> {
  const inodes = new Set<string>();
  for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`);
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m) inodes.add(m[1]!);
    } catch { /* closed meanwhile */ }
  }
  const table = await Deno.readTextFile("/proc/net/tcp");
  for (const line of table.split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 10 || cols[3] !== "0A" || !inodes.has(cols[9]!)) continue; // 0A: LISTEN
    const port = parseInt(cols[1]!.split(":")[1]!, 16);
    if (port !== publicPort) return port;
  }
  throw new Error("No inner listening port found");
}
