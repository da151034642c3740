/**
 * What a network partition may and may not do, with real servers in network namespaces (five
 * servers, K = 2, W = 2, multicast discovery): a server cut off alone never acknowledges a write
 * below W copies and answers `unavailable` within the documented 8 s; it cannot register a name,
 * nor re-register an existing one; a name registered during a 3 | 2 split is created only on the
 * side of three and has one owner on every server once the ring heals; and the copies of every
 * message agree (same order key, K + 1 copies) after repair. Runs as root; see
 * tests/support/netns_cluster.ts.
 */
import assert from "node:assert/strict";
import { accountCopies, accountsHeldBy, presenceHolders } from "../support/ring.ts";
import {
  accountCopiesOn,
  mailboxCopies,
  plantRegistration,
  registeredAt,
} from "../support/ring_records.ts";
import { hash } from "bcryptjs";
import { NetnsCluster, type NetnsNode, netnsTestAvailability } from "../support/netns_cluster.ts";
import { CONVERGE_MS, waitForGroup, waitForRing } from "../support/netns_waits.ts";
import { waitFor } from "../support/wait.ts";

const netns = await netnsTestAvailability("the network-namespace partition tests");

const USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivy", "jack"];
const PASSWORD = "partition-password";
/** README: a write or registration retries for up to 8 s, then the client is told `unavailable`. */
const UNAVAILABLE_WITHIN_MS = 8_000;
/** What the answer may add to that on a busy machine (the event loop, one RPC in flight). */
const ANSWER_SLACK_MS = 1_500;

function discoveryEnv(node: NetnsNode): Record<string, string> {
  return {
    P2P_DISCOVERY: "multicast",
    P2P_MULTICAST_INTERFACE: node.address,
    P2P_ANNOUNCE_INTERVAL_MS: "500",
    // The steps below try wrong passwords on every server, again until the ring converges: with
    // the login limits counted across the ring (tests/integration/limits_test.ts), five servers'
    // tries would use up one name's budget. The limits are not what this test is about.
    P2P_LOGIN_FAILURES_PER_MINUTE: "1000",
    P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "10000",
  };
}

const ids = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}-${i}`.padEnd(12, "0"));

Deno.test({
  name: "partitions: W copies means W copies, and a username has one owner",
  ignore: netns.ignore,
  fn: async (t) => {
    const lan = await NetnsCluster.create(5);
    const timings: number[] = [];
    /** `recipient/id` of every message acknowledged during the split (nobody fetches them). */
    const acknowledged: string[] = [];
    try {
      const five = lan.nodes.slice(0, 5);
      const servers = () => five.map((n) => n.server!);
      await Promise.all(five.map((n) => lan.startServer(n, { env: discoveryEnv(n) })));
      await waitForGroup(lan, five, "five servers to see one another");
      await waitForRing(lan, five, "the five servers to form one correct ring");
      await lan.chat(five[0]!, { op: "register", users: USERS, password: PASSWORD });

      await t.step("an isolated server never acknowledges below W copies", async () => {
        // A server that holds no copy of some account (3 copies of 10 accounts on 5 servers: one
        // always lacks some), so it can be asked to register that existing name again.
        // Every account on its K + 1 servers first (the last copy may still be on its way), then
        // a server that lacks some account but holds two (where a node sits on the ring decides).
        const t0 = Date.now();
        await waitFor("every account on 3 servers", () => {
          const copies = accountCopies(servers());
          return USERS.every((u) => (copies.get(u) ?? 0) >= 3);
        }, 30_000);
        console.log(`  every account on 3 servers after ${Date.now() - t0} ms`);
        const lone = [...five].reverse().find((n) => {
          const held = accountsHeldBy([n.server!]);
          return USERS.some((u) => !held.has(u)) && held.size >= 2;
        })!;
        const notHeld = USERS.find((u) => !accountsHeldBy([lone.server!]).has(u))!;
        const rest = five.filter((n) => n !== lone);
        await lan.cutLink(lone);
        try {
          await Promise.all([
            waitForGroup(lan, [lone], "the cut server to see only itself"),
            waitForGroup(lan, rest, "the others to drop the cut server"),
          ]);
          await waitForRing(lan, [lone], "the cut server to form a ring of one");
          // Users whose accounts it holds, so the write path is what is refused (a login writes the
          // session on W copies, so it is refused there already).
          const held = [...accountsHeldBy([lone.server!])].sort();
          assert.ok(held.length >= 2, `accounts on the cut server: ${held}`);
          const [from, to] = held as [string, string];
          const refused = ids(`lone-${from}`, 5);
          const send = await lan.chat(lone, {
            op: "try_send",
            user: from,
            password: PASSWORD,
            to,
            ids: refused,
          });
          console.log(`  isolated send: ${send.result} after ${send.ms} ms`);
          // Refused at the login already when the session cannot be written on W copies.
          assert.ok(
            send.result === "unavailable" || send.result === "login unavailable",
            `${send.result}: ${send.message}`,
          );
          timings.push(send.ms!);
          assert.ok(send.ms! <= UNAVAILABLE_WITHIN_MS + ANSWER_SLACK_MS, `took ${send.ms} ms`);
          const onDisk = [...mailboxCopies([lone.server!]).keys()].filter((k) =>
            refused.some((id) => k.endsWith(`/${id}`))
          );
          assert.deepEqual(onDisk, [], "a refused write left a copy on the cut server");

          // A new name, and an existing name it holds no copy of, with another password.
          const fresh = await lan.chat(lone, {
            op: "try_register",
            user: "loner",
            password: PASSWORD,
          });
          console.log(`  isolated registration: ${fresh.result} after ${fresh.ms} ms`);
          assert.equal(fresh.result, "unavailable", fresh.message);
          timings.push(fresh.ms!);

          const impostor = await lan.chat(lone, {
            op: "try_register",
            user: notHeld,
            password: "impostor-password",
          });
          console.log(`  isolated re-registration of "${notHeld}": ${impostor.result}`);
          assert.notEqual(
            impostor.result,
            "ok",
            "an isolated server re-registered an existing name",
          );
          timings.push(impostor.ms!);
        } finally {
          await lan.restoreLink(lone);
        }
        await waitForGroup(lan, five, "the cut server to rejoin");
        await waitForRing(lan, five, "one correct ring of five again");
        // The impostor never logs in anywhere; the owner does, everywhere.
        for (const node of five) {
          const wrong = await lan.chat(node, {
            op: "try_login",
            user: notHeld,
            password: "impostor-password",
          });
          assert.equal(wrong.result, "wrong_credentials", `impostor on node ${node.index}`);
          const right = await lan.chat(node, {
            op: "try_login",
            user: notHeld,
            password: PASSWORD,
          });
          assert.equal(right.result, "ok", `owner on node ${node.index}: ${right.message}`);
        }
        assert.equal(accountCopies(servers()).get("loner"), undefined);
      });

      await t.step(
        "a name registered during a 3 | 2 split has one owner everywhere after the heal",
        async () => {
          const [a, b] = [five.slice(0, 3), five.slice(3)];
          let name = "";
          await lan.partition([a, b]);
          try {
            await Promise.all([
              waitForGroup(lan, a, "the side of three to see only itself"),
              waitForGroup(lan, b, "the side of two to see only itself"),
            ]);
            await Promise.all([
              waitForRing(lan, a, "the side of three to form its ring"),
              waitForRing(lan, b, "the side of two to form its ring"),
            ]);
            // Both sides try the same new name. The side of two never registers it. The side of
            // three registers it unless most of the servers that would hold it on the whole ring
            // (ring positions follow the addresses) are on the other side: then it too answers
            // the retryable `unavailable` (it cannot tell the name is free), and both try the
            // next name. Every answer is ok or unavailable, never a wrong one.
            for (const candidate of ["zelda", "yorick", "xanthe", "wilma", "vesna", "ulrich"]) {
              const minority = await lan.chat(b[0]!, {
                op: "try_register",
                user: candidate,
                password: "minority-password",
              });
              console.log(
                `  registration of ${candidate} on the side of two: ${minority.result} after ${minority.ms} ms`,
              );
              assert.equal(minority.result, "unavailable", minority.message);
              timings.push(minority.ms!);
              const majority = await lan.chat(a[0]!, {
                op: "try_register",
                user: candidate,
                password: PASSWORD,
              });
              console.log(`  on the side of three: ${majority.result}`);
              if (majority.result === "ok") {
                name = candidate;
                break;
              }
              assert.equal(majority.result, "unavailable", majority.message);
            }
            assert.ok(name, "the side of three registered one of the names");
            // Both sides keep storing mail among accounts they can read (the side of two has W = 2
            // servers); these copies are checked for agreement after the heal.
            const onB = accountsHeldBy(b.map((n) => n.server!));
            const [fromB, toB] = USERS.filter((u) => onB.has(u)) as [string, string];
            const sentB = await lan.chat(b[1]!, {
              op: "try_send",
              user: fromB,
              password: PASSWORD,
              to: toB,
              ids: ids("split-b", 10),
            });
            assert.equal(sentB.result, "ok", `side of two: ${sentB.message}`);
            acknowledged.push(...ids("split-b", 10).map((id) => `${toB}/${id}`));
            const sentA = await lan.chat(a[1]!, {
              op: "try_send",
              user: "alice",
              password: PASSWORD,
              to: "bob",
              ids: ids("split-a", 10),
            });
            assert.equal(sentA.result, "ok", `side of three: ${sentA.message}`);
            acknowledged.push(...ids("split-a", 10).map((id) => `bob/${id}`));
          } finally {
            await lan.heal();
          }
          await waitForGroup(lan, five, "all five again after the heal");
          await waitForRing(lan, five, "one correct ring of five after the heal");
          const healed = Date.now();
          // The owner's password works on every server (once the copies reached the merged ring's
          // replica set); the minority's never does (the login limits are raised: discoveryEnv).
          const interim = new Set<string>();
          await waitFor(
            `${name}'s owner to log in on every server`,
            async () => {
              for (const node of five) {
                const right = await lan.chat(node, {
                  op: "try_login",
                  user: name,
                  password: PASSWORD,
                });
                if (right.result !== "ok") {
                  interim.add(`node ${node.index}: ${right.result}`);
                  return false;
                }
              }
              return true;
            },
            CONVERGE_MS,
            250,
          );
          console.log(
            `  one owner of "${name}" on every server ${Date.now() - healed} ms after the heal` +
              (interim.size ? ` (before that: ${[...interim].join(", ")})` : ""),
          );
          for (const node of five) {
            const wrong = await lan.chat(node, {
              op: "try_login",
              user: name,
              password: "minority-password",
            });
            assert.equal(wrong.result, "wrong_credentials", `minority's ${name} on ${node.index}`);
          }
        },
      );

      await t.step(
        "a registration that loses its name is revoked everywhere and told",
        async () => {
          // Stands in for the other side of a partition: an older registration of "yuki" reaches one
          // copy (planted in its database), as the heal's anti-entropy would deliver it.
          const yuki = await lan.chat(five[0]!, {
            op: "try_register",
            user: "yuki",
            password: "newer-password",
          });
          assert.equal(yuki.result, "ok", yuki.message);
          const held = lan.chat(five[3]!, {
            op: "hold",
            user: "yuki",
            password: "newer-password",
            forMs: CONVERGE_MS,
          });
          await waitFor(
            "yuki's session to be online",
            () => presenceHolders(servers(), "yuki").length > 0,
            CONVERGE_MS,
            100,
          );
          const holder = servers().find((s) => accountCopiesOn(s).includes("yuki"))!;
          const createdAt = registeredAt([holder], "yuki")!;
          const planted = Date.now();
          plantRegistration(holder, "yuki", {
            hash: await hash("older-password", 10),
            createdAt: createdAt - 60_000,
          });
          const told = await held;
          console.log(`  the newer registration's session ended ${Date.now() - planted} ms later`);
          assert.equal(told.result, "superseded");
          assert.match(told.message ?? "", /older account.*register another/);
          assert.equal(told.closed, true, "the loser's connection stays open");
          assert.equal(told.resumed, "not_authenticated", "the loser's token still resumes");
          await waitFor(
            "the older registration to own yuki on every server",
            async () => {
              for (const node of five) {
                const loser = await lan.chat(node, {
                  op: "try_login",
                  user: "yuki",
                  password: "newer-password",
                });
                if (loser.result !== "wrong_credentials") return false;
                const winner = await lan.chat(node, {
                  op: "try_login",
                  user: "yuki",
                  password: "older-password",
                });
                if (winner.result !== "ok") return false;
              }
              return true;
            },
            CONVERGE_MS,
            250,
          );
        },
      );

      await t.step("copies of every message agree after repair", async () => {
        let last: [string, number[]][] = [];
        await waitFor(
          "every pending message to have K + 1 copies with one seq",
          () => {
            last = [...mailboxCopies(servers())].filter(([, seqs]) =>
              seqs.length !== 3 || new Set(seqs).size !== 1
            );
            return last.length === 0;
          },
          CONVERGE_MS,
          500,
        ).catch((err) => {
          throw new Error(`${(err as Error).message}\ndisagreeing: ${JSON.stringify(last)}`);
        });
        // Nothing acknowledged was lost, and nothing refused was stored.
        assert.deepEqual([...mailboxCopies(servers()).keys()].sort(), acknowledged.sort());
      });
      console.log(`  unavailable answers: ${timings.join(", ")} ms`);
    } finally {
      await lan.destroy();
    }
  },
});
