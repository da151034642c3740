/**
 * Zero-configuration discovery across real network namespaces: servers started without any
 * peer address find one another by signed UDP multicast on a private bridge and form one CHORD
 * ring, ignore a server with the wrong cluster secret, split into two groups (and two rings) when
 * the LAN is partitioned and become one cluster and one ring again when it heals. Ring
 * correctness is judged by the core's invariant checker over every node's `/ring`. Runs as root;
 * see tests/support/netns_cluster.ts.
 */
import assert from "node:assert/strict";
import { accountsHeldBy } from "../support/ring.ts";
import {
  NetnsCluster,
  type NetnsCluster as Lan,
  type NetnsNode,
  netnsTestAvailability,
} from "../support/netns_cluster.ts";
import { waitFor } from "../support/server_process.ts";
import { CONVERGE_MS, waitForGroup, waitForRing } from "../support/netns_waits.ts";

const netns = await netnsTestAvailability("the network-namespace discovery tests");

const USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivy", "jack"];
const PASSWORD = "partition-password";

function discoveryEnv(node: NetnsNode): Record<string, string> {
  return {
    P2P_DISCOVERY: "multicast",
    P2P_MULTICAST_INTERFACE: node.address,
    P2P_ANNOUNCE_INTERVAL_MS: "500",
  };
}

async function metric(lan: Lan, node: NetnsNode, series: string): Promise<number> {
  const text = await lan.get(node, "/metrics");
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function totalMerges(lan: Lan, nodes: NetnsNode[]): Promise<number> {
  const counts = await Promise.all(nodes.map((n) => metric(lan, n, "p2pchat_ring_merges_total")));
  return counts.reduce((a, b) => a + b, 0);
}

Deno.test({
  name: "discovery: servers in separate namespaces find one another by signed multicast",
  ignore: netns.ignore,
  fn: async (t) => {
    const lan = await NetnsCluster.create(5);
    try {
      const five = lan.nodes.slice(0, 5);

      await t.step("five servers started without peer addresses form one cluster", async () => {
        await Promise.all(five.map((n) => lan.startServer(n, { env: discoveryEnv(n) })));
        const ms = await waitForGroup(lan, five, "five servers to see one another");
        console.log(`  five servers converged in ${ms} ms`);
        for (const n of five) {
          assert.ok(await metric(lan, n, "p2pchat_discovery_accepted_total") > 0);
          assert.equal(await metric(lan, n, "p2pchat_discovery_errors_total"), 0);
        }
        const ringMs = await waitForRing(lan, five, "the five servers to form one correct ring");
        console.log(`  one correct ring of five ${ringMs} ms later`);
        await lan.chat(five[0]!, { op: "register", users: USERS, password: PASSWORD });
      });

      await t.step(
        "a 3 | 2 partition splits cluster and ring; healing makes one ring",
        async () => {
          const [a, b] = [five.slice(0, 3), five.slice(3)];
          await lan.partition([a, b]);
          await Promise.all([
            waitForGroup(lan, a, "the side of three to see only itself"),
            waitForGroup(lan, b, "the side of two to see only itself"),
          ]);
          const [ringA, ringB] = await Promise.all([
            waitForRing(lan, a, "the side of three to form a correct ring of its own"),
            waitForRing(lan, b, "the side of two to form a correct ring of its own"),
          ]);
          console.log(`  partitioned rings correct (${ringA} ms, ${ringB} ms after membership)`);
          // Accounts are ring records on K+1 = 3 of the 5 servers: the side of three holds a copy
          // of every account, the side of two of most. Each side writes offline messages between
          // users it can read while the sides cannot reach each other.
          const onB = accountsHeldBy(b.map((n) => n.server!));
          const usableOnB = USERS.filter((u) => u !== "alice" && onB.has(u));
          assert.ok(usableOnB.length >= 3, `accounts readable on the side of two: ${usableOnB}`);
          const [fromB, ...toB] = usableOnB as [string, string, string];
          const plan = [
            { node: a[0]!, from: "alice", to: ["bob", "dave"], fetchOn: b[1]! },
            { node: b[0]!, from: fromB, to: toB.slice(0, 2), fetchOn: a[1]! },
          ];
          const sent = new Map<string, { ids: string[]; fetchOn: NetnsNode }>();
          for (const { node, from, to: recipients, fetchOn } of plan) {
            for (const to of recipients) {
              const ids = Array.from(
                { length: 20 },
                (_, i) => `${from}-to-${to}-${i}`.padEnd(12, "0"),
              );
              await lan.chat(node, { op: "send", user: from, password: PASSWORD, to, ids });
              const box = sent.get(to) ?? { ids: [], fetchOn };
              box.ids.push(...ids);
              sent.set(to, box);
            }
          }
          const mergesBefore = await totalMerges(lan, five);
          await lan.heal();
          const healStarted = Date.now();
          const ms = await waitForGroup(lan, five, "all five again after the heal");
          console.log(`  cluster healed in ${ms} ms`);
          await waitForRing(lan, five, "one correct ring of five after the heal");
          const merges = await totalMerges(lan, five) - mergesBefore;
          console.log(`  one correct ring of five ${Date.now() - healStarted} ms after the heal`);
          console.log(`  (${merges} ring merges)`);
          assert.ok(merges >= 1, "the ring became one by merging");
          // Every message from either side reaches its recipient, once, on any server.
          for (const [to, { ids: expected, fetchOn: node }] of sent) {
            const got: string[] = [];
            await waitFor(
              `${to} to receive all ${expected.length} messages`,
              async () => {
                got.push(
                  ...((await lan.chat(node, { op: "fetch", user: to, password: PASSWORD })).ids ??
                    []),
                );
                return got.length >= expected.length;
              },
              CONVERGE_MS,
              500,
            );
            assert.deepEqual(
              [...got].sort(),
              [...expected].sort(),
              `${to}'s messages after the heal`,
            );
          }
        },
      );

      const sixth = await lan.addNode();
      const six = [...five, sixth];

      await t.step("a sixth server started later joins", async () => {
        await lan.startServer(sixth, { env: discoveryEnv(sixth) });
        const ms = await waitForGroup(lan, six, "the sixth server to join");
        console.log(`  sixth server joined in ${ms} ms`);
        await waitForRing(lan, six, "the sixth server to be in one correct ring");
      });

      await t.step("a server whose link is cut drops out and comes back", async () => {
        await lan.cutLink(sixth);
        await Promise.all([
          waitForGroup(lan, five, "the others to drop the cut server"),
          waitForGroup(lan, [sixth], "the cut server to see only itself"),
        ]);
        await lan.restoreLink(sixth);
        await waitForGroup(lan, six, "the restored server to rejoin");
        const ms = await waitForRing(lan, six, "the restored server to be back in one ring");
        console.log(`  ring of six correct again ${ms} ms after the cluster`);
      });

      await t.step("a server with the wrong cluster secret is ignored", async () => {
        const intruder = await lan.addNode();
        await lan.startServer(intruder, {
          secret: "not-the-cluster-secret-0123456789",
          env: discoveryEnv(intruder),
        });
        const forged = 'p2pchat_discovery_dropped_total{reason="forged"}';
        // Every member must have heard (and dropped) several of its announcements.
        await waitFor(
          "every member to drop the intruder's announcements",
          async () => {
            const counts = await Promise.all(six.map((n) => metric(lan, n, forged)));
            return counts.every((c) => c >= 3);
          },
          CONVERGE_MS,
          250,
        );
        const expected = six.map((n) => n.server!.url).sort();
        for (const n of six) assert.deepEqual(await lan.liveServers(n), expected);
        assert.deepEqual(await lan.liveServers(intruder), [intruder.server!.url]);
        assert.ok(await metric(lan, intruder, forged) >= 3, "the intruder drops ours too");
      });
    } finally {
      await lan.destroy();
    }
  },
});
