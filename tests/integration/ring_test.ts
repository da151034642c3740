/**
 * The CHORD ring between real server processes: five servers form one correctly ordered ring,
 * repair it after a kill -9, take the restarted server back, and refuse a server that does not
 * hold the cluster secret. Correctness is judged by the core's invariant checker over every
 * node's `/ring` snapshot.
 */
import assert from "node:assert/strict";
import { ringView, ringViolations as violations, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";

Deno.test("five servers form one ring, repair it after kill -9, and take the restarted server back", async () => {
  const servers = await startCluster(5);
  const extra: ServerProcess[] = [];
  try {
    await waitForCorrectRing(servers, "5 servers to form one correct ring");
    const views = await Promise.all(servers.map(ringView));
    assert.ok(views.every((v) => v.isMember && v.successors.length >= 4));

    // kill -9 one server: the four others repair the ring within a bounded number of rounds
    // (the maintenance period is 500 ms; 20 s is 40 rounds).
    const victim = servers[2]!;
    await victim.stop("SIGKILL");
    const survivors = servers.filter((s) => s !== victim);
    const repairMs = await waitForCorrectRing(survivors, "the 4 survivors to repair the ring");
    console.log(`ring repaired ${repairMs} ms after kill -9`);
    for (const v of await Promise.all(survivors.map(ringView))) {
      assert.ok(!v.successors.some((n) => n.address === victim.url), "dead node still listed");
    }

    // Restart it on the same address and data: it rejoins the ring.
    const port = Number(new URL(victim.url).port);
    const back = await startServer({ port, dataDir: victim.dataDir, peers: [servers[0]!.url] });
    extra.push(back);
    await waitForCorrectRing([...survivors, back], "the restarted server to rejoin the ring");
  } finally {
    await Promise.all([...servers, ...extra].map((s) => s.stop()));
  }
});

Deno.test("a server with the wrong cluster secret cannot join the ring", async () => {
  const servers = await startCluster(3);
  const intruders: ServerProcess[] = [];
  try {
    await waitForCorrectRing(servers, "3 servers to form one correct ring");
    const intruder = await startServer({
      secret: "not-the-cluster-secret-at-all",
      peers: [servers[0]!.url],
    });
    intruders.push(intruder);
    await waitFor("the intruder to be refused", async () => {
      const text = await (await fetch(`${servers[0]!.url}/metrics`)).text();
      return /p2pchat_cluster_rejected_total\{[^}]*reason="auth"[^}]*\} [1-9]/.test(text);
    });
    // The intruder keeps knocking: through a few maintenance rounds of every member, it never
    // appears in the ring.
    const before = await Promise.all(servers.map(stabilizeRounds));
    let intruderSeen = false;
    await waitFor("4 more maintenance rounds on every server", async () => {
      for (const v of await Promise.all(servers.map(ringView))) {
        if ([...v.successors, v.predecessor].some((n) => n?.address === intruder.url)) {
          intruderSeen = true;
        }
      }
      const now = await Promise.all(servers.map(stabilizeRounds));
      return intruderSeen || now.every((n, i) => n >= before[i]! + 4);
    });
    assert.equal(intruderSeen, false, "intruder appears in the ring");
    assert.deepEqual(await violations(servers), []);
    const view = await ringView(intruder);
    assert.ok(view.successors.every((n) => n.address === intruder.url), "intruder has ring peers");
  } finally {
    await Promise.all([...servers, ...intruders].map((s) => s.stop()));
  }
});

/** How many stabilize rounds `server` has run (its metric). */
async function stabilizeRounds(server: ServerProcess): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const match = text.match(/^p2pchat_ring_stabilize_rounds_total(?:\{[^}]*\})? (\d+)$/m);
  if (!match) throw new Error(`${server.url}/metrics has no p2pchat_ring_stabilize_rounds_total`);
  return Number(match[1]);
}
