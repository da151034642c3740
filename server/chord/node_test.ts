import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { ChordJoinError, NoLiveSuccessorError, NotAMemberError } from "./errors.ts";
import { IdSpace } from "./id.ts";
import type { ChordRequest, ChordResponse } from "./messages.ts";
import { ChordNode } from "./node.ts";
import type { NodeRef } from "./node_ref.ts";
import { seededRandom } from "./random.ts";
import { SimNetwork } from "./sim_network.ts";
import { SimRing } from "./sim_ring.ts";

const BITS = 8;
const space = new IdSpace(BITS);
const hex = (id: number) => space.toHex(BigInt(id));

function makeNode(network: SimNetwork, id: number, r = 3): ChordNode {
  return new ChordNode(
    { transport: network.transport(`sim:${id}`), clock: network.clock, random: seededRandom(id) },
    { bits: BITS, id: BigInt(id), successorListLength: r },
  );
}

/** A scripted peer: answers each request type as told; records what it received. */
function fakePeer(
  network: SimNetwork,
  id: number,
  answers: Partial<Record<ChordRequest["type"], ChordResponse>>,
): ChordRequest[] {
  const received: ChordRequest[] = [];
  network.transport(`sim:${id}`).listen((request) => {
    received.push(request);
    const answer = answers[request.type];
    return Promise.resolve(
      answer ?? { v: 1, type: "error", code: "unscripted", message: request.type },
    );
  });
  return received;
}

const wire = (id: number) => ({ id: hex(id), address: `sim:${id}` });
const ref = (id: number): NodeRef => ({ id: BigInt(id), address: `sim:${id}` });

async function roundsOn(network: SimNetwork, nodes: ChordNode[], rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await network.runAll(nodes.map(async (n) => {
      await n.stabilize();
      await n.checkPredecessor();
      await n.fixFingers();
    }));
  }
}

Deno.test("a one-node ring owns every key and finds it in zero hops", async () => {
  const network = new SimNetwork(space);
  const node = makeNode(network, 10);
  node.create();
  ok(node.isResponsibleFor(200n));
  deepStrictEqual(await network.run(node.lookup(200n)), {
    owner: ref(10),
    hops: 0,
    alternatives: [],
  });
});

Deno.test("operations on a node that has not joined fail with NotAMemberError", async () => {
  const network = new SimNetwork(space);
  const node = makeNode(network, 10);
  await rejects(node.stabilize(), NotAMemberError);
  await rejects(node.lookup(3n), NotAMemberError);
});

Deno.test("stabilize adopts a closer successor only after contacting it", async () => {
  const network = new SimNetwork(space, { rpcTimeoutMs: 100 });
  const joined = makeNode(network, 11);
  // Successor 50 claims a predecessor 30 that does not answer (it has crashed, or never was).
  fakePeer(network, 50, {
    get_predecessor: { v: 1, type: "predecessor", predecessor: wire(30) },
    get_successor_list: {
      v: 1,
      type: "successor_list",
      node: wire(50),
      successors: [wire(80), wire(10)],
    },
    notify: { v: 1, type: "ack" },
  });
  // Member 60 answers the join lookup: 50 owns id 11.
  fakePeer(network, 60, {
    find_successor: { v: 1, type: "successor_found", owner: wire(50), successors: [wire(50)] },
  });
  await network.run(joined.join("sim:60"));
  deepStrictEqual(joined.successorList.map((n) => n.id), [50n, 80n, 10n]);
  await network.run(joined.stabilize());
  deepStrictEqual(joined.successor, ref(50), "30 never answered, so it is not adopted");
  // Now 30 comes alive: the next stabilize contacts it and adopts it with its list.
  fakePeer(network, 30, {
    get_successor_list: {
      v: 1,
      type: "successor_list",
      node: wire(30),
      successors: [wire(50), wire(80)],
    },
    get_predecessor: { v: 1, type: "predecessor", predecessor: null },
    notify: { v: 1, type: "ack" },
  });
  await network.run(joined.stabilize());
  deepStrictEqual(joined.successorList.map((n) => n.id), [30n, 50n, 80n]);
});

Deno.test("notify replaces a live predecessor only with a node between it and us", async () => {
  const network = new SimNetwork(space);
  const node = makeNode(network, 100);
  node.create();
  fakePeer(network, 50, { ping: { v: 1, type: "pong", node: wire(50) } });
  fakePeer(network, 70, { ping: { v: 1, type: "pong", node: wire(70) } });
  fakePeer(network, 20, { ping: { v: 1, type: "pong", node: wire(20) } });
  const notify = (from: number) =>
    network.run(
      network.transport(`sim:n${from}`).call("sim:100", { v: 1, type: "notify", node: wire(from) }),
    );
  await notify(50);
  deepStrictEqual(node.predecessor, ref(50));
  await notify(20); // 20 is not in (50, 100) and 50 is alive
  deepStrictEqual(node.predecessor, ref(50));
  await notify(70); // 70 is in (50, 100)
  deepStrictEqual(node.predecessor, ref(70));
});

Deno.test("notify replaces a dead predecessor even with a node outside the interval", async () => {
  const network = new SimNetwork(space, { rpcTimeoutMs: 50 });
  const node = makeNode(network, 100);
  node.create();
  const notify = (from: number) =>
    network.run(
      network.transport(`sim:n${from}`).call("sim:100", { v: 1, type: "notify", node: wire(from) }),
    );
  fakePeer(network, 70, {});
  await notify(70);
  network.crash("sim:70");
  fakePeer(network, 20, {});
  await notify(20);
  deepStrictEqual(node.predecessor, ref(20));
});

Deno.test("three nodes converge: successors, predecessors and lists in ring order", async () => {
  const network = new SimNetwork(space);
  const [a, b, c] = [makeNode(network, 10), makeNode(network, 100), makeNode(network, 200)];
  a!.create();
  await network.run(b!.join("sim:10"));
  await network.run(c!.join("sim:100"));
  await roundsOn(network, [a!, b!, c!], 6);
  deepStrictEqual(a!.successorList.map((n) => n.id), [100n, 200n, 10n]);
  deepStrictEqual(b!.successorList.map((n) => n.id), [200n, 10n, 100n]);
  deepStrictEqual([a!.predecessor?.id, b!.predecessor?.id, c!.predecessor?.id], [200n, 10n, 100n]);
  deepStrictEqual((await network.run(a!.lookup(150n))).owner, ref(200));
  deepStrictEqual((await network.run(c!.lookup(5n))).owner, ref(10));
});

Deno.test("joining with an id already on the ring is refused", async () => {
  const network = new SimNetwork(space);
  const a = makeNode(network, 10);
  a.create();
  const twin = new ChordNode(
    { transport: network.transport("sim:twin"), clock: network.clock, random: seededRandom(1) },
    { bits: BITS, id: 10n },
  );
  await rejects(network.run(twin.join("sim:10")), ChordJoinError);
  ok(!twin.isMember);
});

Deno.test("a graceful leave links the leaver's neighbours to each other at once", async () => {
  const network = new SimNetwork(space);
  const nodes = [10, 100, 200].map((id) => makeNode(network, id));
  const [a, b, c] = nodes as [ChordNode, ChordNode, ChordNode];
  a.create();
  await network.run(b.join("sim:10"));
  await network.run(c.join("sim:10"));
  await roundsOn(network, nodes, 6);
  await network.run(b.leave());
  ok(!b.isMember);
  deepStrictEqual(a.successor, ref(200));
  deepStrictEqual(c.predecessor, ref(10));
  await rejects(
    network.run(network.transport("sim:x").call("sim:100", { v: 1, type: "ping" })).then((r) => {
      if (r.type === "error") throw new Error(r.code);
    }),
    /not_a_member/,
  );
});

Deno.test("a node whose successors and fallbacks are all dead reports NoLiveSuccessorError and can rejoin", async () => {
  const ring = new SimRing({
    bits: 16,
    seed: 4,
    rpcTimeoutMs: 50,
    node: { successorListLength: 2 },
  });
  ring.bootstrap();
  for (let i = 1; i < 24; i++) await ring.join();
  await ring.converge(40);
  const sorted = ring.members().sort((x, y) => (x.self.id < y.self.id ? -1 : 1));
  const victim = sorted[0]!;
  // Crash everyone the victim knows: its two successors, its predecessor and all fingers.
  const known = new Set([
    ...victim.successorList.map((n) => n.address),
    victim.predecessor!.address,
    ...victim.state().fingers.flatMap((f) => (f ? [f.address] : [])),
  ]);
  for (const node of [...ring.nodes.values()]) if (known.has(node.self.address)) ring.crash(node);
  await rejects(ring.network.run(victim.stabilize()), NoLiveSuccessorError);
  ok(!victim.isMember);
  // The survivors repair, and the victim rejoins through the harness, as a server would.
  await ring.converge(40);
  ok(victim.isMember);
});

Deno.test("before the ring repairs a crash, lookups finish and name the live owner or a crashed one", async () => {
  const ring = new SimRing({ bits: 20, seed: 8, rpcTimeoutMs: 50 });
  ring.bootstrap();
  for (let i = 1; i < 40; i++) await ring.join();
  await ring.converge(60);
  for (let i = 0; i < 10; i++) await ring.round(20);
  const random = seededRandom(3);
  const members = ring.members();
  for (let i = 0; i < 4; i++) ring.crash(members[Math.floor(random.next() * members.length)]!);
  const live = ring.members();
  let correct = 0;
  for (let i = 0; i < 200; i++) {
    const key = ring.randomKey();
    const { owner } = await ring.network.run(live[i % live.length]!.lookup(key));
    if (owner.address === ring.trueOwner(key).address) correct++;
    // Until stabilize runs, a crashed owner's predecessor still names it; never a wrong live node.
    else ok(ring.network.isCrashed(owner.address), `key ${key}: ${owner.address}`);
  }
  ok(correct >= 150, `correct ${correct}/200`);
  await ring.converge(20);
  for (let i = 0; i < 200; i++) {
    const key = ring.randomKey();
    const { owner } = await ring.network.run(live[i % live.length]!.lookup(key));
    deepStrictEqual(owner, ring.trueOwner(key));
  }
});
