/**
 * Offline storage through the real path on a local ring (K = 2, W = 2, SQLite synchronous=FULL).
 * Headline: one message per frame, as a person chats — S senders, each on its own WebSocket
 * connection (spread over the 3 servers), each sending its messages (~200 bytes) to offline `bob`
 * one frame at a time, the next once the last was acknowledged. Beside it the batched figure:
 * one client sends the same number to offline `carol` in frames of --batch messages, --in-flight
 * at a time. Then how long bob waits to receive all of his on login, and how long after a kill -9
 * every one of his messages is back to K + 1 copies. The per-connection frame limit stays at the
 * server's default (50 frames/s, bursts of 100); each headline sender sends messages / S frames.
 * Progress on stderr; the last stdout line is one JSON object.
 * Usage: deno task bench:store [--messages N] [--senders N] [--batch N] [--in-flight N]
 */
import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "5000" },
    senders: { type: "string", default: "100" },
    batch: { type: "string", default: "200" },
    "in-flight": { type: "string", default: "4" },
  },
});
const total = Number(values.messages);
const senders = Number(values.senders);
const batchSize = Number(values.batch);
const inFlight = Number(values["in-flight"]);
for (
  const [name, v, max] of [
    ["messages", total, 9000],
    ["senders", senders, 1000],
    ["batch", batchSize, 500],
    ["in-flight", inFlight, 64],
  ] as const
) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`Error: --${name} must be a whole number from 1 to ${max}`);
    Deno.exit(2);
  }
}
if (Math.ceil(total / senders) > 100) {
  console.error("Error: at most 100 messages per sender (the frame limit's burst)");
  Deno.exit(2);
}
const log = (msg: string) => console.error(`[bench:store] ${msg}`);
const PASSWORD = "bench-password-123";
const K = 2;
const FRAME_RATE = 50; // the server's default, stated in the output
// Many accounts from one address, and one sender filling a mailbox in the batched run.
const env = {
  P2P_REGISTRATIONS_PER_MINUTE: "100000",
  P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "100000",
  P2P_LOGIN_FAILURES_PER_MINUTE: "10000",
  P2P_MAILBOX_QUOTA_PER_SENDER: "10000",
  P2P_FRAME_RATE: String(FRAME_RATE),
};

/** Copies of `recipient`'s pending messages on `servers`, by message id. */
function copiesOf(servers: ServerProcess[], recipient: string): Map<string, number> {
  const copies = new Map<string, number>();
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT message_id FROM mailbox WHERE recipient = ?")
        .all(recipient) as { message_id: string }[];
      for (const r of rows) copies.set(r.message_id, (copies.get(r.message_id) ?? 0) + 1);
    } finally {
      db.close();
    }
  }
  return copies;
}

/** CPU time (user + system) a process has used so far, in ms (Linux /proc, 10 ms ticks). */
function cpuMs(pid: number | "self"): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
const serversCpuMs = () => servers.reduce((sum, s) => sum + cpuMs(s.pid), 0);

const message = (prefix: string, i: number) => ({
  id: `${prefix}-${String(i).padStart(7, "0")}`,
  sentAt: Date.now(),
  envelope: "e".repeat(200),
});

const servers: ServerProcess[] = [];
const clients: TestClient[] = [];
try {
  log("starting a 3-server ring (K = 2, W = 2)");
  servers.push(...await startCluster(3, { env }));
  await waitForCorrectRing(servers, "the ring to form");
  const names = Array.from({ length: senders }, (_, i) => `sender${i}`);
  log(`registering bob, carol, alice and ${senders} senders`);
  const setup = await TestClient.connect(servers[0]!.url);
  clients.push(setup);
  for (const u of ["alice", "bob", "carol", ...names]) {
    const r = await setup.request({ type: "register", username: u, secret: PASSWORD }, 60_000);
    if (r.type !== "ok") throw new Error(`register ${u}: ${JSON.stringify(r)}`);
  }
  const conns = await Promise.all(names.map(async (u, i) => {
    const c = await TestClient.connect(servers[i % servers.length]!.url);
    clients.push(c);
    // 100 logins at once on a busy machine: one may be told to try again shortly.
    for (let attempt = 1;; attempt++) {
      const s = await c.request({ type: "login", username: u, secret: PASSWORD }, 60_000);
      if (s.type === "session") break;
      if (attempt === 5 || s.type !== "error" || s.code !== "unavailable") {
        throw new Error(`login ${u}: ${JSON.stringify(s)}`);
      }
      await new Promise((r) => setTimeout(r, 500 * attempt)); // back off, as a client would
    }
    return c;
  }));

  // --- headline: one message per frame, many senders --------------------------------------
  const perSender = Array.from(
    { length: senders },
    (_, s) => Math.floor(total / senders) + (s < total % senders ? 1 : 0),
  );
  log(`${senders} senders send ${total} messages to bob, one per frame`);
  const cpu0 = { servers: serversCpuMs(), client: cpuMs("self") };
  const t0 = performance.now();
  await Promise.all(conns.map(async (c, s) => {
    for (let i = 0; i < perSender[s]!; i++) {
      const reply = await c.request({
        type: "mail_send",
        to: "bob",
        messages: [message(`s${s}`, i)],
      }, 60_000);
      if (reply.type !== "ok") throw new Error(`Send refused: ${JSON.stringify(reply)}`);
    }
  }));
  const singleMs = performance.now() - t0;
  const singleCpu = { servers: serversCpuMs() - cpu0.servers, client: cpuMs("self") - cpu0.client };
  log(
    `one per frame: acknowledged in ${
      singleMs.toFixed(0)
    } ms; CPU: servers ${singleCpu.servers} ms, ` +
      `this client ${singleCpu.client} ms`,
  );

  // --- beside it: many messages per frame ---------------------------------------------------
  const alice = await TestClient.connect(servers[0]!.url);
  clients.push(alice);
  await alice.login("alice", PASSWORD, false);
  const batches = Array.from(
    { length: Math.ceil(total / batchSize) },
    (_, b) =>
      Array.from(
        { length: Math.min(batchSize, total - b * batchSize) },
        (_, j) => message("b", b * batchSize + j),
      ),
  );
  log(`alice sends ${total} messages to carol in frames of ${batchSize}, ${inFlight} in flight`);
  const t1 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < batches.length) {
      const batch = batches[next++]!;
      const reply = await alice.request(
        { type: "mail_send", to: "carol", messages: batch },
        60_000,
      );
      if (reply.type !== "ok") throw new Error(`Batch refused: ${JSON.stringify(reply)}`);
    }
  }));
  const batchedMs = performance.now() - t1;
  log(`batched: acknowledged in ${batchedMs.toFixed(0)} ms`);
  await Promise.all(clients.splice(0).map((c) => c.close()));

  log("bob logs in on another server and drains his mailbox");
  const bob = await TestClient.connect(servers[1]!.url);
  clients.push(bob);
  await bob.login("bob", PASSWORD, false);
  const t2 = performance.now();
  const mail = await bob.request({ type: "mail_fetch" }, 60_000);
  const drainMs = performance.now() - t2;
  if (mail.type !== "mail" || mail.messages.length !== total) {
    throw new Error(
      `Drain returned ${mail.type === "mail" ? mail.messages.length : mail.type}, want ${total}`,
    );
  }
  await bob.close();

  // Repair needs a node to repair onto: with K = 2 a 3-node ring has no spare after a crash.
  log("adding a 4th server, then kill -9 of one holding copies of bob's messages");
  const fourth = await startServer({ peers: [servers[0]!.url], env });
  servers.push(fourth);
  await waitForCorrectRing(servers, "the 4-server ring");
  // Exactly K+1: the hand-off has dropped the copies the new ring no longer places, so the crash
  // below really takes a copy away.
  await waitFor(
    "exactly K+1 copies of bob's messages on the 4-server ring",
    () => {
      const c = copiesOf(servers, "bob");
      return c.size === total && [...c.values()].every((n) => n === K + 1);
    },
    60_000,
    100,
  );
  const victim = servers.find((s) => copiesOf([s], "bob").size === total)!;
  await victim.stop("SIGKILL");
  const t3 = performance.now();
  const survivors = servers.filter((s) => s !== victim);
  await waitFor(
    "K+1 copies after the crash",
    () => {
      const c = copiesOf(survivors, "bob");
      return c.size === total && [...c.values()].every((n) => n >= K + 1);
    },
    60_000,
    50,
  );
  const repairMs = performance.now() - t3;

  console.log(JSON.stringify({
    offline_store_msgs_per_s: Math.round(total / (singleMs / 1000)),
    offline_store_batched_msgs_per_s: Math.round(total / (batchedMs / 1000)),
    drain_5000_ms: Math.round(drainMs),
    repair_after_crash_ms: Math.round(repairMs),
    messages: total,
    senders,
    servers_cpu_ms: singleCpu.servers,
    client_cpu_ms: singleCpu.client,
    messages_per_frame: 1,
    frame_limit_per_connection_per_s: FRAME_RATE,
    batch: batchSize,
    in_flight: inFlight,
    write_quorum: 2,
    sqlite_synchronous: "FULL",
  }));
} finally {
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  await Promise.all(servers.map((s) => s.stop()));
}
