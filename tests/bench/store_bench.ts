/**
 * Offline storage through the real path on a local ring (K = 2, W = 2, SQLite synchronous=FULL).
 * Headline: one message per frame, as a person chats — S senders, each on its own WebSocket
 * connection (spread over the 3 servers), each sending its messages (~200 bytes) to offline `bob`
 * one frame at a time, the next once the last was acknowledged. The headline runs --rounds times
 * (round 1 to `bob`, the others to other offline users, so other primaries take them) and reports
 * the median round, each round's figure beside it: one round lasts about a second, short enough
 * for a stray stall to move it. Beside it the batched figure:
 * one client sends the same number to offline `carol` in frames of --batch messages, --in-flight
 * at a time. Then the drain: how long bob, logging in on another server, takes to fetch all of
 * his messages (page by page) and acknowledge them (frames of 500, all sent at once, as the app
 * does). Then the repair: one server is killed with -9, --repair-messages are stored for `dave`
 * while it is down (2 copies each), and it is restarted from its own disk; repair_after_crash_ms
 * runs from the restart until every one of them is back at K + 1 copies (the repair rounds at
 * work). The per-connection frame limit stays at the server's default (50 frames/s, bursts of
 * 100); each headline sender sends messages / S frames per round. Progress on stderr; the last stdout line
 * is one JSON object.
 * Usage: deno task bench:store [--messages N] [--senders N] [--rounds N] [--batch N]
 *        [--in-flight N] [--repair-messages N] [--cpu-prof-dir DIR]
 * (--cpu-prof-dir: the servers run with `deno run --cpu-prof` and write their profiles there when
 * the bench stops them; the headline's start and end are logged as seconds of /proc/uptime, the
 * clock the profiles' timestamps count from, to cut the headline out of them.)
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
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";
import { MAX_MAIL_BATCH } from "../../shared/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "5000" },
    senders: { type: "string", default: "100" },
    rounds: { type: "string", default: "3" },
    batch: { type: "string", default: "200" },
    "in-flight": { type: "string", default: "4" },
    "repair-messages": { type: "string", default: "2000" },
    "cpu-prof-dir": { type: "string" },
  },
});
const total = Number(values.messages);
const senders = Number(values.senders);
const rounds = Number(values.rounds);
const batchSize = Number(values.batch);
const inFlight = Number(values["in-flight"]);
const repairMessages = Number(values["repair-messages"]);
for (
  const [name, v, max] of [
    ["messages", total, 9000],
    ["senders", senders, 1000],
    ["rounds", rounds, 9],
    ["batch", batchSize, 500],
    ["in-flight", inFlight, 64],
    ["repair-messages", repairMessages, 9000],
  ] as const
) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`Error: --${name} must be a whole number from 1 to ${max}`);
    Deno.exit(2);
  }
}
if (Math.ceil(total / senders) > 50) {
  // The rounds follow one another: the frame limit's burst (100) and its rate (50/s) must hold.
  console.error("Error: at most 50 messages per sender and round (the frame limit)");
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
// Every connection says it is alive every 5 s, as the app does: on a busy machine the 100 logins
// take longer than the server's silence limit, and a silent session is closed.
const heartbeats = setInterval(() => {
  for (const c of clients) {
    try {
      c.send({ type: "heartbeat" });
    } catch { /* closing */ }
  }
}, 5_000);
try {
  log("starting a 3-server ring (K = 2, W = 2)");
  const denoFlags = values["cpu-prof-dir"]
    ? ["--cpu-prof", `--cpu-prof-dir=${values["cpu-prof-dir"]}`]
    : [];
  servers.push(...await startCluster(3, { env, denoFlags }));
  await waitForCorrectRing(servers, "the ring to form");
  const names = Array.from({ length: senders }, (_, i) => `sender${i}`);
  // Round 1 fills bob's mailbox (drained below); the others go to other offline users.
  const recipients = Array.from({ length: rounds }, (_, r) => r === 0 ? "bob" : `bob${r + 1}`);
  log(`registering ${recipients.join(", ")}, carol, dave, alice and ${senders} senders`);
  const setup = await TestClient.connect(servers[0]!.url);
  clients.push(setup);
  for (const u of ["alice", ...recipients, "carol", "dave", ...names]) {
    const r = await setup.request({
      type: "register",
      username: u,
      secret: PASSWORD,
      ...TEST_ACCOUNT,
    }, 60_000);
    if (r.type !== "ok") throw new Error(`register ${u}: ${JSON.stringify(r)}`);
  }
  const login = async (u: string, i: number) => {
    const c = await TestClient.connect(servers[i % servers.length]!.url);
    clients.push(c);
    // Many logins on a busy machine: one may be told to try again shortly.
    for (let attempt = 1;; attempt++) {
      const s = await c.request({ type: "login", username: u, secret: PASSWORD }, 60_000);
      if (s.type === "session") break;
      if (attempt === 5 || s.type !== "error" || s.code !== "unavailable") {
        throw new Error(`login ${u}: ${JSON.stringify(s)}`);
      }
      await new Promise((r) => setTimeout(r, 500 * attempt)); // back off, as a client would
    }
    return c;
  };
  // Ten logins at a time (setup, not measured): a hundred bcrypt checks at once stall a server
  // on a busy machine long enough for its peers to suspect it.
  const conns: TestClient[] = [];
  for (let i = 0; i < names.length; i += 10) {
    conns.push(...await Promise.all(names.slice(i, i + 10).map((u, j) => login(u, i + j))));
  }

  // --- headline: one message per frame, many senders --------------------------------------
  const perSender = Array.from(
    { length: senders },
    (_, s) => Math.floor(total / senders) + (s < total % senders ? 1 : 0),
  );
  const uptime = () => Deno.readTextFileSync("/proc/uptime").split(" ")[0];
  /** One round: every sender sends its share to `to`, one message per frame, one at a time. */
  const round = async (to: string, r: number) => {
    log(`round ${r + 1} of ${rounds}: ${senders} senders send ${total} messages to ${to}`);
    const cpu0 = { servers: serversCpuMs(), client: cpuMs("self") };
    const t0 = performance.now();
    const waits: number[] = [];
    await Promise.all(conns.map(async (c, s) => {
      for (let i = 0; i < perSender[s]!; i++) {
        const sent = performance.now();
        const reply = await c.request({
          type: "mail_send",
          to,
          messages: [message(`r${r}-s${s}`, i)],
        }, 60_000);
        if (reply.type !== "ok") throw new Error(`Send refused: ${JSON.stringify(reply)}`);
        waits.push(performance.now() - sent);
      }
    }));
    const ms = performance.now() - t0;
    const cpu = { servers: serversCpuMs() - cpu0.servers, client: cpuMs("self") - cpu0.client };
    const perS = Math.round(total / (ms / 1000));
    log(
      `round ${r + 1}: ${perS} msgs/s (acknowledged in ${ms.toFixed(0)} ms; CPU: servers ` +
        `${cpu.servers} ms, this client ${cpu.client} ms)`,
    );
    return { perS, ms, waits, cpu };
  };
  log(`headline starts at uptime ${uptime()} s`);
  const results = [];
  for (const [r, to] of recipients.entries()) results.push(await round(to, r));
  log(`headline ends at uptime ${uptime()} s`);
  const median = [...results].sort((a, b) => a.perS - b.perS)[Math.floor(results.length / 2)]!;
  const waits = results.flatMap((x) => x.waits);
  // How many messages each group commit and each replica request carried (the batching at work).
  for (const [i, s] of servers.entries()) {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const metric = (name: string) =>
      Number(text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, "m"))?.[1] ?? 0);
    const commits = metric("p2pchat_mailbox_group_commits_total");
    if (commits) {
      log(
        `server${i}: ${metric("p2pchat_mailbox_stored_total")} messages in ${commits} group ` +
          "commits",
      );
    }
  }
  if (values["cpu-prof-dir"]) {
    log(`profiles of the headline in ${values["cpu-prof-dir"]}: stopping here`);
    console.log(JSON.stringify({ offline_store_msgs_per_s: median.perS }));
    clearInterval(heartbeats);
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop())); // SIGTERM: they write their profiles
    Deno.exit(0);
  }
  waits.sort((a, b) => a - b);
  const ackMs = (q: number) =>
    Math.round(waits[Math.min(waits.length - 1, Math.floor(q * waits.length))]!);
  log(
    `one per frame, all rounds: time to ack p50 ${ackMs(0.5)} ms, p99 ${ackMs(0.99)} ms, ` +
      `max ${ackMs(1)} ms; median round ${median.perS} msgs/s`,
  );
  const singleCpu = median.cpu;

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

  log("bob logs in on another server and drains his mailbox (fetch, then ack, as a client does)");
  const bob = await TestClient.connect(servers[1]!.url);
  clients.push(bob);
  await bob.login("bob", PASSWORD, false);
  const t2 = performance.now();
  const drained: { id: string; from: string }[] = [];
  let after: string | undefined;
  while (true) {
    const page = await bob.request({ type: "mail_fetch", ...(after ? { after } : {}) }, 60_000);
    if (page.type !== "mail") throw new Error(`Fetch answered ${JSON.stringify(page)}`);
    for (const m of page.messages) drained.push({ id: m.id, from: m.from });
    if (!page.more || !page.messages.length) break;
    after = page.messages.at(-1)!.id;
  }
  const fetchMs = performance.now() - t2;
  if (drained.length !== total || new Set(drained.map((m) => m.id)).size !== total) {
    throw new Error(`Drain returned ${drained.length} messages, want ${total} distinct`);
  }
  // All ack frames at once, as the app sends them (client/inbox.ts).
  const acks = [];
  for (let i = 0; i < drained.length; i += MAX_MAIL_BATCH) {
    acks.push(bob.request(
      { type: "mail_ack", messages: drained.slice(i, i + MAX_MAIL_BATCH) },
      60_000,
    ));
  }
  for (const r of await Promise.all(acks)) {
    if (r.type !== "ok") throw new Error(`Ack refused: ${JSON.stringify(r)}`);
  }
  const drainMs = performance.now() - t2;
  log(
    `drain: fetched in ${fetchMs.toFixed(0)} ms, fetched and acknowledged in ${
      drainMs.toFixed(0)
    } ms`,
  );
  const left = await bob.request({ type: "mail_fetch" }, 60_000);
  if (left.type !== "mail" || left.messages.length) {
    throw new Error(
      `After the acks bob's mailbox still holds ${JSON.stringify(left).slice(0, 200)}`,
    );
  }
  await bob.close();

  // Repair: kill -9 one server (with K = 2 on 3 servers every server holds every key), store
  // messages while it is down (they get the 2 copies left), restart it from its own disk, and
  // time until every one of them is back at K + 1 copies — what the repair rounds really do.
  const victim = servers[2]!;
  log(`kill -9 of one server; ${repairMessages} messages to dave while it is down`);
  await victim.stop("SIGKILL");
  const survivors = servers.slice(0, 2);
  const writer = await TestClient.connect(survivors[0]!.url);
  clients.push(writer);
  await writer.login("alice", PASSWORD, false);
  for (let i = 0; i < repairMessages; i += batchSize) {
    const batch = Array.from(
      { length: Math.min(batchSize, repairMessages - i) },
      (_, j) => message("r", i + j),
    );
    const reply = await writer.request({ type: "mail_send", to: "dave", messages: batch }, 60_000);
    if (reply.type !== "ok") throw new Error(`Send while down refused: ${JSON.stringify(reply)}`);
  }
  await Promise.all(clients.splice(0).map((c) => c.close()));
  const before = copiesOf(survivors, "dave");
  if (before.size !== repairMessages) throw new Error(`dave holds ${before.size} messages`);
  const victimCopies = copiesOf([victim], "dave").size;
  log(`restarting it from its disk (it holds ${victimCopies} of dave's ${repairMessages})`);
  const t3 = performance.now();
  const restarted = await startServer({ dataDir: victim.dataDir, peers: [servers[0]!.url], env });
  servers[2] = restarted;
  const readyMs = performance.now() - t3;
  await waitFor(
    "K+1 copies of every message of dave after the restart",
    () => {
      const c = copiesOf(servers, "dave");
      return c.size === repairMessages && [...c.values()].every((n) => n >= K + 1);
    },
    120_000,
    20,
  );
  const repairMs = performance.now() - t3;
  log(
    `repair: K+1 copies ${repairMs.toFixed(0)} ms after the restart began (ready after ${
      readyMs.toFixed(0)
    } ms)`,
  );

  console.log(JSON.stringify({
    offline_store_msgs_per_s: median.perS,
    offline_store_rounds_msgs_per_s: results.map((x) => x.perS),
    offline_store_batched_msgs_per_s: Math.round(total / (batchedMs / 1000)),
    drain_5000_ms: Math.round(drainMs),
    repair_after_crash_ms: Math.round(repairMs),
    messages: total,
    repaired_messages: repairMessages,
    restart_ready_ms: Math.round(readyMs),
    senders,
    ack_p50_ms: ackMs(0.5),
    ack_p99_ms: ackMs(0.99),
    ack_max_ms: ackMs(1),
    servers_cpu_ms: singleCpu.servers,
    client_cpu_ms: singleCpu.client,
    messages_per_frame: 1,
    frame_limit_per_connection_per_s: FRAME_RATE,
    batch: batchSize,
    in_flight: inFlight,
    write_quorum: 2,
    sqlite_synchronous: "FULL",
  }));
} catch (err) {
  for (const s of servers) {
    console.error(`--- last log lines of ${s.url}:\n${s.logs().split("\n").slice(-20).join("\n")}`);
  }
  throw err;
} finally {
  clearInterval(heartbeats);
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  await Promise.all(servers.map((s) => s.stop()));
}
