/**
 * Simulation tests of the whole ring at scale, on the in-memory network. Each test is seeded;
 * on failure the seed is in the error message so the run can be replayed.
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import type { RingViolation } from "./invariants.ts";
import { OwnerIndex, SimRing } from "./sim_ring.ts";
import { pick, randomInt, shuffle } from "./random.ts";

function describeViolations(violations: readonly RingViolation[]): string {
  return JSON.stringify(
    violations.slice(0, 3),
    (_k, v) => (typeof v === "bigint" ? v.toString(16) : v),
  );
}

/** Runs `body` with `seed`, naming the seed in any failure so the run can be replayed. */
async function withSeed(seed: number, body: (seed: number) => Promise<void>): Promise<void> {
  try {
    await body(seed);
  } catch (error) {
    throw new Error(`Failed with seed ${seed} (replay with this seed): ${error}`, { cause: error });
  }
}

Deno.test("1,024 nodes joining one by one converge to one ring passing the invariant checker", async () => {
  await withSeed(1024, async (seed) => {
    const ring = new SimRing({ bits: 32, seed, node: { fingersPerRound: 1 } });
    ring.bootstrap();
    for (let i = 1; i < 1024; i++) {
      await ring.join();
      // A maintenance round every 8 joins; the weak invariants must hold throughout.
      if (i % 8 === 0) {
        await ring.round();
        const weak = ring.check("weak");
        ok(weak.length === 0, `after ${i + 1} joins: ${describeViolations(weak)}`);
      }
    }
    const rounds = await ring.converge(60);
    deepStrictEqual(ring.members().length, 1024);
    deepStrictEqual(ring.check("full"), []);
    ok(rounds <= 60);
  });
});

Deno.test("a 10,000-step churn of joins, leaves and crashes converges to one ring after churn stops", async () => {
  await withSeed(10_000, async (seed) => {
    const ring = new SimRing({ bits: 24, seed, node: { fingersPerRound: 1 } });
    const random = ring.network.random;
    ring.bootstrap();
    for (let i = 1; i < 64; i++) await ring.join();
    await ring.converge(100);
    const counts = { joins: 0, leaves: 0, crashes: 0, rejoins: 0 };
    for (let step = 1; step <= 10_000; step++) {
      const members = ring.members();
      const roll = random.next();
      // Keep the ring between 32 and 128 nodes, churning around 64.
      if (members.length < 32 || (roll < 0.4 && members.length < 128)) {
        await ring.join();
        counts.joins++;
      } else if (roll < 0.7) {
        await ring.leave(pick(random, members));
        counts.leaves++;
      } else {
        ring.crash(pick(random, members));
        counts.crashes++;
      }
      if (step % 10 === 0) {
        counts.rejoins += (await ring.round()).rejoined;
        const weak = ring.check("weak");
        ok(weak.length === 0, `at step ${step}: ${describeViolations(weak)}`);
      }
    }
    const rounds = await ring.converge(100);
    deepStrictEqual(ring.check("full"), []);
    console.log(
      `churn seed ${seed}: ${JSON.stringify(counts)}, converged ${rounds} rounds after churn`,
    );
  });
});

Deno.test("after 50% of nodes crash at once and the ring stabilizes, every lookup returns the live owner", async () => {
  await withSeed(50, async (seed) => {
    const ring = new SimRing({ bits: 32, seed, node: { fingersPerRound: 1 } });
    const random = ring.network.random;
    ring.bootstrap();
    for (let i = 1; i < 256; i++) {
      await ring.join();
      if (i % 8 === 0) await ring.round();
    }
    await ring.converge(60);
    for (let i = 0; i < 20; i++) await ring.round(8); // settle fingers too
    const victims = shuffle(random, ring.members()).slice(0, 128);
    for (const node of victims) ring.crash(node);
    await ring.converge(60);
    const members = ring.members();
    deepStrictEqual(members.length, 128);
    const truth = new OwnerIndex(members.map((n) => n.self));
    let wrong = 0;
    for (let i = 0; i < 2000; i++) {
      const key = ring.randomKey();
      const node = members[randomInt(random, members.length)]!;
      const { owner } = await ring.network.run(node.lookup(key));
      if (owner.address !== truth.ownerOf(key).address) wrong++;
    }
    deepStrictEqual(wrong, 0);
  });
});

Deno.test("churn over a network losing 5% of messages still converges to one ring", async () => {
  await withSeed(505, async (seed) => {
    const ring = new SimRing({ bits: 24, seed, lossRate: 0.05, node: { fingersPerRound: 1 } });
    const random = ring.network.random;
    ring.bootstrap();
    for (let i = 1; i < 48; i++) await ring.join();
    await ring.converge(100);
    for (let step = 1; step <= 2_000; step++) {
      const members = ring.members();
      const roll = random.next();
      if (members.length < 24 || (roll < 0.4 && members.length < 96)) await ring.join();
      else if (roll < 0.7) await ring.leave(pick(random, members));
      else ring.crash(pick(random, members));
      if (step % 10 === 0) {
        await ring.round();
        const weak = ring.check("weak");
        ok(weak.length === 0, `at step ${step}: ${describeViolations(weak)}`);
      }
    }
    // Loss continues while the ring converges: retries keep live successors from being evicted.
    await ring.converge(100);
    deepStrictEqual(ring.check("full"), []);
  });
});
