/**
 * Offline storage through the real path on a local ring (K = 2, W = 2, SQLite synchronous=FULL):
 * how fast one client's 5,000 offline messages (~200 bytes each) are acknowledged, how long the
 * recipient waits to receive all 5,000 on login, and how long after a kill -9 every message is
 * back to K + 1 copies. Progress on stderr; the last stdout line is one JSON object.
 * Usage: deno task bench:store [--messages N] [--batch N] [--in-flight N]
 */
import { parseArgs } from "node:util";
import { mailboxCopies, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "5000" },
    batch: { type: "string", default: "200" },
    "in-flight": { type: "string", default: "4" },
  },
});
const total = Number(values.messages);
const batchSize = Number(values.batch);
const inFlight = Number(values["in-flight"]);
for (
  const [name, v, max] of [["messages", total, 1e6], ["batch", batchSize, 500], [
    "in-flight",
    inFlight,
    64,
  ]] as const
) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`Error: --${name} must be a whole number from 1 to ${max}`);
    Deno.exit(2);
  }
}
const log = (msg: string) => console.error(`[bench:store] ${msg}`);
const PASSWORD = "bench-password-123";
const K = 2;

const servers: ServerProcess[] = [];
try {
  log("starting a 3-server ring (K = 2, W = 2)");
  servers.push(...await startCluster(3));
  await waitForCorrectRing(servers, "the ring to form");
  const setup = await TestClient.connect(servers[0]!.url);
  for (const u of ["alice", "bob"]) {
    await setup.request({ type: "register", username: u, secret: PASSWORD, ...TEST_ACCOUNT });
  }
  await setup.close();

  const alice = await TestClient.connect(servers[0]!.url);
  await alice.login("alice", PASSWORD, false);
  const batches = Array.from(
    { length: Math.ceil(total / batchSize) },
    (_, b) =>
      Array.from({ length: Math.min(batchSize, total - b * batchSize) }, (_, j) => {
        const i = b * batchSize + j;
        return {
          id: `bench-${String(i).padStart(7, "0")}`,
          sentAt: Date.now(),
          envelope: "e".repeat(200),
        };
      }),
  );
  log(`alice sends ${total} offline messages in batches of ${batchSize}, ${inFlight} in flight`);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < batches.length) {
      const batch = batches[next++]!;
      const reply = await alice.request({ type: "mail_send", to: "bob", messages: batch }, 60_000);
      if (reply.type !== "ok") throw new Error(`Batch refused: ${JSON.stringify(reply)}`);
    }
  }));
  const storeMs = performance.now() - t0;
  await alice.close();
  log(`acknowledged in ${storeMs.toFixed(0)} ms`);

  log("bob logs in on another server and drains his mailbox");
  const bob = await TestClient.connect(servers[1]!.url);
  await bob.login("bob", PASSWORD, false);
  const t1 = performance.now();
  const mail = await bob.request({ type: "mail_fetch" }, 60_000);
  const drainMs = performance.now() - t1;
  if (mail.type !== "mail" || mail.messages.length !== total) {
    throw new Error(
      `Drain returned ${mail.type === "mail" ? mail.messages.length : mail.type}, want ${total}`,
    );
  }
  await bob.close();

  // Repair needs a node to repair onto: with K = 2 a 3-node ring has no spare after a crash.
  log("adding a 4th server, then kill -9 of one holding copies");
  const fourth = await startServer({ peers: [servers[0]!.url] });
  servers.push(fourth);
  await waitForCorrectRing(servers, "the 4-server ring");
  // Exactly K+1: the hand-off has dropped the copies the new ring no longer places, so the crash
  // below really takes a copy away.
  await waitFor(
    "exactly K+1 copies on the 4-server ring",
    () => {
      const c = mailboxCopies(servers);
      return c.size === total && [...c.values()].every((n) => n === K + 1);
    },
    60_000,
    100,
  );
  const victim = servers.find((s) => mailboxCopies([s]).size === total)!;
  await victim.stop("SIGKILL");
  const t2 = performance.now();
  const survivors = servers.filter((s) => s !== victim);
  await waitFor(
    "K+1 copies after the crash",
    () => {
      const c = mailboxCopies(survivors);
      return c.size === total && [...c.values()].every((n) => n >= K + 1);
    },
    60_000,
    50,
  );
  const repairMs = performance.now() - t2;

  console.log(JSON.stringify({
    offline_store_msgs_per_s: Math.round(total / (storeMs / 1000)),
    drain_5000_ms: Math.round(drainMs),
    repair_after_crash_ms: Math.round(repairMs),
    messages: total,
    batch: batchSize,
    in_flight: inFlight,
    sqlite_synchronous: "FULL",
  }));
} finally {
  await Promise.all(servers.map((s) => s.stop()));
}
