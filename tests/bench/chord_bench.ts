/**
 * CHORD benchmark on the simulated network (m = 160, SHA-1-sized ids).
 *
 * Prints progress to stderr and, as its last stdout line, one JSON object:
 * - `hops.<N>.mean` / `.p99`: hops per lookup (remote `find_successor` steps, see
 *   server/chord/lookup.ts) over random keys from random nodes on a converged N-node ring with
 *   refreshed fingers. The CHORD paper's mean path length is about ½·log2 N.
 * - `rounds_to_converge_join_1024`: 1,024 nodes join one by one (a maintenance round after every
 *   8 joins); the figure is the number of further rounds, after the last join, until the full
 *   invariant checker passes.
 * - `rounds_to_converge_crash50_1024`: rounds until the full checker passes again after half of a
 *   converged 1,024-node ring crashes at once.
 * - `lookups_correct_after_crash50`: fraction of random lookups from live nodes that name the
 *   true live owner once those rounds are done.
 * - `keys_max_over_mean_1024`: most keys on one node over the mean, for 100,000 random keys.
 *
 * A round = every live member runs stabilize, checkPredecessor and fixFingers (one finger
 * lookup), concurrently, on virtual time.
 *
 * Run: deno run -A tests/bench/chord_bench.ts [--seed N] [--lookups N]
 */

import { randomInt, shuffle } from "../../server/chord/mod.ts";
import { OwnerIndex, SimRing } from "../../server/chord/testing.ts";

const BITS = 160;
const args = Deno.args;
const argValue = (name: string, fallback: number) => {
  const at = args.indexOf(name);
  return at >= 0 && args[at + 1] !== undefined ? Number(args[at + 1]) : fallback;
};
const SEED = argValue("--seed", 2017);
const LOOKUPS = argValue("--lookups", 10_000);
const LOAD_KEYS = 100_000;

const started = performance.now();
const progress = (message: string) =>
  console.error(`[chord_bench ${((performance.now() - started) / 1000).toFixed(1)}s] ${message}`);

/** Builds a ring of `size` nodes by joining one by one; returns it and the rounds after the last join. */
async function buildRing(size: number): Promise<{ ring: SimRing; roundsAfterJoin: number }> {
  const ring = new SimRing({ bits: BITS, seed: SEED + size, node: { fingersPerRound: 1 } });
  ring.bootstrap();
  for (let i = 1; i < size; i++) {
    await ring.join();
    if (i % 8 === 0) await ring.round();
  }
  const roundsAfterJoin = await ring.converge(200);
  progress(
    `${size} nodes joined; converged ${roundsAfterJoin} rounds after the last join (${ring.rounds} rounds in all)`,
  );
  return { ring, roundsAfterJoin };
}

/** Refreshes every finger of every node (as many rounds of fix-fingers eventually would). */
async function refreshAllFingers(ring: SimRing): Promise<void> {
  for (let pass = 0; pass < 2; pass++) {
    await ring.network.runAll(ring.members().map((node) => node.fixFingers(BITS)));
  }
}

interface HopStats {
  mean: number;
  p99: number;
  correct: number;
  failed: number;
}

async function measureLookups(ring: SimRing, count: number): Promise<HopStats> {
  const random = ring.network.random;
  const members = ring.members();
  const truth = new OwnerIndex(members.map((n) => n.self));
  const hops: number[] = [];
  let correct = 0;
  let failed = 0;
  const batch = 100;
  for (let done = 0; done < count; done += batch) {
    const keys = Array.from({ length: Math.min(batch, count - done) }, () => ring.randomKey());
    const results = await ring.network.runAll(
      keys.map((key) => members[randomInt(random, members.length)]!.lookup(key)),
    );
    results.forEach((result, i) => {
      // A failed lookup (possible only before the ring has repaired) counts as wrong.
      if (result.status === "rejected") return failed++;
      hops.push(result.value.hops);
      if (result.value.owner.address === truth.ownerOf(keys[i]!).address) correct++;
    });
  }
  hops.sort((a, b) => a - b);
  const mean = hops.reduce((a, b) => a + b, 0) / hops.length;
  const p99 = hops[Math.min(hops.length - 1, Math.ceil(hops.length * 0.99) - 1)]!;
  return { mean: round3(mean), p99, correct: correct / count, failed };
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

const hops: Record<string, { mean: number; p99: number }> = {};
let roundsJoin1024 = NaN;
let ring1024: SimRing | undefined;
for (const size of [64, 256, 1024]) {
  const { ring, roundsAfterJoin } = await buildRing(size);
  await refreshAllFingers(ring);
  const stats = await measureLookups(ring, LOOKUPS);
  hops[String(size)] = { mean: stats.mean, p99: stats.p99 };
  progress(
    `N=${size}: mean hops ${stats.mean} (½·log2 N = ${
      (Math.log2(size) / 2).toFixed(2)
    }), p99 ${stats.p99}, correct ${stats.correct}`,
  );
  if (stats.correct !== 1) {
    throw new Error(`Lookups on a converged ${size}-node ring were wrong: ${stats.correct}`);
  }
  if (size === 1024) {
    roundsJoin1024 = roundsAfterJoin;
    ring1024 = ring;
  }
}
const ring = ring1024!;

// Load: 100,000 random keys over the 1,024 nodes.
const truth = new OwnerIndex(ring.members().map((n) => n.self));
const load = new Map<string, number>();
for (let i = 0; i < LOAD_KEYS; i++) {
  const owner = truth.ownerOf(ring.space.idFromKey(`key:${SEED}:${i}`)).address;
  load.set(owner, (load.get(owner) ?? 0) + 1);
}
const mean = LOAD_KEYS / ring.members().length;
const keysMaxOverMean = round3(Math.max(...load.values()) / mean);
progress(
  `load: max ${Math.max(...load.values())} keys on one node, mean ${
    mean.toFixed(1)
  }, max/mean ${keysMaxOverMean}`,
);

// Half of the nodes crash at once.
const victims = shuffle(ring.network.random, ring.members()).slice(0, 512);
for (const node of victims) ring.crash(node);
const before = await measureLookups(ring, 2_000);
progress(
  `crashed 512 of 1024; before repair: ${
    (before.correct * 100).toFixed(1)
  }% of lookups correct, ${before.failed} of 2000 failed`,
);
const roundsCrash = await ring.converge(200);
const after = await measureLookups(ring, LOOKUPS);
progress(
  `converged ${roundsCrash} rounds after the crash; ${
    (after.correct * 100).toFixed(2)
  }% of lookups correct, mean hops ${after.mean}`,
);

console.log(JSON.stringify({
  hops,
  rounds_to_converge_join_1024: roundsJoin1024,
  rounds_to_converge_crash50_1024: roundsCrash,
  lookups_correct_after_crash50: after.correct,
  keys_max_over_mean_1024: keysMaxOverMean,
}));
