/**
 * Frozen servers (SIGSTOP: the process holds its sockets open and answers nothing) among real
 * server processes, K = 2, W = 2: the live servers stop counting on them quickly, writes to every
 * recipient keep being acknowledged while two of five servers are frozen, and once they resume
 * the ring heals and every acknowledged message is delivered exactly once. The longest pause of
 * one write is printed (a measurement, not asserted).
 */
import assert from "node:assert/strict";
import { ringView, waitForCorrectRing } from "../support/ring.ts";
import { type ServerProcess, startCluster, waitFor } from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
const RECIPIENTS = Array.from({ length: 12 }, (_, i) => `rcpt${String(i).padStart(2, "0")}`);
const SENDERS = ["alice", "bob", "carol"];
const WRITERS = SENDERS.length;

async function health(server: ServerProcess): Promise<{ servers: string[]; suspect?: string[] }> {
  return await (await fetch(`${server.url}/healthz`)).json();
}

interface Write {
  to: string;
  id: string;
  result: string;
  ms: number;
  /** Whether it started while servers were frozen. */
  duringFreeze: boolean;
}

Deno.test("two frozen servers: writes keep being acknowledged, the ring heals after SIGCONT", async () => {
  const servers = await startCluster(5);
  const clients: TestClient[] = [];
  const frozen: ServerProcess[] = [];
  let writing = true;
  let freezing = false;
  const writes: Write[] = [];
  try {
    const home = servers[0]!;
    const registrar = await TestClient.connect(home.url);
    clients.push(registrar);
    for (const u of [...SENDERS, ...RECIPIENTS]) {
      const r = await registrar.request({
        type: "register",
        username: u,
        secret: PASSWORD,
        ...TEST_ACCOUNT,
      });
      assert.equal(r.type, "ok", `register ${u}: ${JSON.stringify(r)}`);
    }
    // The two servers after the client's home on the ring: every replica set touching them has
    // at most one live copy besides, so writes depend on noticing them.
    const view = await ringView(home);
    const victims = view.successors.slice(0, 2).map((s) => s.address);
    for (const address of victims) frozen.push(servers.find((s) => s.url === address)!);
    assert.equal(frozen.length, 2);

    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      const client = await TestClient.connect(home.url);
      clients.push(client);
      await client.login(SENDERS[w]!, PASSWORD, false);
      const mine = RECIPIENTS.filter((_, i) => i % WRITERS === w);
      for (let n = 0; writing; n++) {
        const to = mine[n % mine.length]!;
        const id = `w${w}-${String(n).padStart(5, "0")}`;
        const duringFreeze = freezing;
        const started = performance.now();
        const r = await client.request({
          type: "mail_send",
          to,
          messages: [{ id, sentAt: Date.now(), envelope: `sealed:${id}` }],
        }, 60_000);
        writes.push({
          to,
          id,
          result: r.type === "ok" ? "ok" : r.type === "error" ? r.code : r.type,
          ms: Math.round(performance.now() - started),
          duringFreeze,
        });
        // Paced below the per-connection frame limit (50 per second), which fast answers reach.
        await new Promise((r) => setTimeout(r, 30));
      }
    });
    const done = Promise.all(writers);
    await waitFor("writes before the freeze", () => writes.length >= 30);

    for (const s of frozen) Deno.kill(s.pid, "SIGSTOP");
    freezing = true;
    const frozenAt = writes.length;
    const frozenSince = Date.now();
    const live = servers.filter((s) => !frozen.includes(s));
    await waitFor("the live servers to suspect or drop the frozen ones", async () => {
      for (const s of live) {
        const h = await health(s);
        const counted = victims.filter((v) => h.servers.includes(v) && !h.suspect?.includes(v));
        if (counted.length) return false;
      }
      return true;
    });
    const noticedMs = Date.now() - frozenSince;
    await waitFor("the live servers to declare the frozen ones dead", async () => {
      for (const s of live) {
        const h = await health(s);
        if (victims.some((v) => h.servers.includes(v))) return false;
      }
      return true;
    });
    // Writes go on while they stay frozen: five more to every recipient.
    const target = writes.length + 5 * RECIPIENTS.length;
    await waitFor("writes while two servers are frozen", () => writes.length >= target, 60_000);
    for (const s of frozen) Deno.kill(s.pid, "SIGCONT");
    freezing = false;
    const frozenMs = Date.now() - frozenSince;
    await waitFor("every server to see all five again", async () => {
      for (const s of servers) if ((await health(s)).servers.length !== 5) return false;
      return true;
    });
    await waitForCorrectRing(servers, "the ring to heal after SIGCONT");
    await waitFor("writes after the thaw", () => writes.length >= target + RECIPIENTS.length);
    writing = false;
    await done;

    const during = writes.slice(frozenAt).filter((w) => w.duringFreeze);
    const longest = Math.max(...during.map((w) => w.ms));
    console.log(JSON.stringify({
      frozenMs,
      noticedMs,
      writes: writes.length,
      writesWhileFrozen: during.length,
      longestWritePauseMs: longest,
      notOk: writes.filter((w) => w.result !== "ok").map((w) => `${w.result} ${w.ms}ms`),
    }));
    // Each live server suspected each frozen one (and said so) before declaring it dead.
    for (const s of live) {
      const events = s.logs().split("\n").filter((l) => l.startsWith("{")).map((l) =>
        JSON.parse(l)
      );
      for (const v of victims) {
        const suspected = events.findIndex((e) => e.event === "peer_suspect" && e.peer === v);
        const down = events.findIndex((e) => e.event === "peer_down" && e.peer === v);
        assert.ok(suspected >= 0, `${s.url} logged no peer_suspect for ${v}`);
        assert.ok(down > suspected, `${s.url} declared ${v} dead before suspecting it`);
      }
    }
    assert.deepEqual(
      writes.filter((w) => w.result !== "ok"),
      [],
      "every write is acknowledged: three of five servers can always hold W = 2 copies",
    );

    // Nothing acknowledged is lost or doubled: each recipient fetches exactly what was sent.
    for (const user of RECIPIENTS) {
      const client = await TestClient.connect(servers[1 + RECIPIENTS.indexOf(user) % 4]!.url);
      clients.push(client);
      await client.login(user, PASSWORD, false);
      const reply = await client.request({ type: "mail_fetch" }, 30_000);
      assert.equal(reply.type, "mail");
      const got = reply.type === "mail" ? reply.messages.map((m) => m.id).sort() : [];
      const sent = writes.filter((w) => w.to === user).map((w) => w.id).sort();
      assert.deepEqual(got, sent, `${user}'s mailbox`);
    }
  } finally {
    writing = false;
    for (const s of frozen) {
      try {
        Deno.kill(s.pid, "SIGCONT");
      } catch { /* already ended */ }
    }
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop("SIGKILL")));
  }
});
