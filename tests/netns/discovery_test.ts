/**
 * Zero-configuration discovery across real network namespaces: servers started without any
 * peer address find one another by signed UDP multicast on a private bridge, ignore a server
 * with the wrong cluster secret, split into two groups when the LAN is partitioned and become
 * one again when it heals. Runs as root; see tests/support/netns_cluster.ts.
 */
import assert from "node:assert/strict";
import {
  NetnsCluster,
  type NetnsCluster as Lan,
  type NetnsNode,
  netnsTestAvailability,
} from "../support/netns_cluster.ts";
import { waitFor } from "../support/server_process.ts";

const netns = await netnsTestAvailability("the network-namespace discovery tests");

/** How long a change of membership may take to show everywhere (hello timeout 3.5 s + rounds). */
const CONVERGE_MS = 25_000;

function discoveryEnv(node: NetnsNode): Record<string, string> {
  return {
    P2P_DISCOVERY: "multicast",
    P2P_MULTICAST_INTERFACE: node.address,
    P2P_ANNOUNCE_INTERVAL_MS: "500",
  };
}

/** Waits until every node in `nodes` sees exactly the servers of `nodes` alive. */
async function waitForGroup(lan: Lan, nodes: NetnsNode[], what: string): Promise<number> {
  const started = Date.now();
  const expected = nodes.map((n) => n.server!.url).sort();
  let last: string[][] = [];
  try {
    await waitFor(
      what,
      async () => {
        last = await Promise.all(nodes.map((n) => lan.liveServers(n)));
        return last.every((seen) => JSON.stringify(seen) === JSON.stringify(expected));
      },
      CONVERGE_MS,
      250,
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nexpected ${JSON.stringify(expected)}\nlast seen ${
        JSON.stringify(last)
      }`,
    );
  }
  return Date.now() - started;
}

async function metric(lan: Lan, node: NetnsNode, series: string): Promise<number> {
  const text = await lan.get(node, "/metrics");
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
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
      });

      await t.step("a 3 | 2 partition splits the cluster; healing joins it again", async () => {
        const [a, b] = [five.slice(0, 3), five.slice(3)];
        await lan.partition([a, b]);
        await Promise.all([
          waitForGroup(lan, a, "the side of three to see only itself"),
          waitForGroup(lan, b, "the side of two to see only itself"),
        ]);
        await lan.heal();
        const ms = await waitForGroup(lan, five, "all five again after the heal");
        console.log(`  healed in ${ms} ms`);
      });

      const sixth = await lan.addNode();
      const six = [...five, sixth];

      await t.step("a sixth server started later joins", async () => {
        await lan.startServer(sixth, { env: discoveryEnv(sixth) });
        const ms = await waitForGroup(lan, six, "the sixth server to join");
        console.log(`  sixth server joined in ${ms} ms`);
      });

      await t.step("a server whose link is cut drops out and comes back", async () => {
        await lan.cutLink(sixth);
        await Promise.all([
          waitForGroup(lan, five, "the others to drop the cut server"),
          waitForGroup(lan, [sixth], "the cut server to see only itself"),
        ]);
        await lan.restoreLink(sixth);
        await waitForGroup(lan, six, "the restored server to rejoin");
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
