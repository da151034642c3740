import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { ManualClock } from "../../shared/clock.ts";
import { RingGatherer } from "./gatherer.ts";
import type { NodeReport } from "./report.ts";

/** The report of node `id` (8-bit ids) in a correct ring of `ids`. */
function report(ids: number[], id: number): NodeReport {
  const i = ids.indexOf(id);
  const ref = (x: number) => ({ id: x.toString(16).padStart(2, "0"), address: `n${x}` });
  const at = (k: number) => ids[(i + k + ids.length) % ids.length]!;
  return {
    v: 1,
    type: "ring_report",
    bits: 8,
    view: {
      self: ref(id),
      isMember: true,
      predecessor: ref(at(-1)),
      successors: [ref(at(1)), ref(at(2))],
      fingers: [ref(at(1))],
    },
    counts: { accounts: 1, presence: 0, mailbox: 0 },
    events: [],
    repaired: 0,
  };
}

Deno.test("the gatherer asks every live server while watched, and only then", async () => {
  const clock = new ManualClock();
  let live = [10, 70, 130];
  const asked: string[] = [];
  const gatherer = new RingGatherer({
    self: "n10",
    selfReport: () => report(live, 10),
    liveServers: () => [10, 70, 130].map((x) => `n${x}`),
    fetchReport: (address) => {
      asked.push(address);
      const id = Number(address.slice(1));
      return live.includes(id)
        ? Promise.resolve(report(live, id))
        : Promise.reject(new Error("connection refused"));
    },
    log: () => {},
    clock,
  }, { bits: 8, replicas: 1, successorListLength: 2, intervalMs: 500 });
  await clock.advance(2000);
  equal(asked.length, 0, "nobody watches: no requests");
  const pictures: number[] = [];
  const unsubscribe = gatherer.subscribe((p) => pictures.push(p.violationCount));
  await clock.advance(0);
  await clock.advance(0);
  deepStrictEqual(asked.sort(), ["n130", "n70"]);
  equal(gatherer.latest()?.nodes.length, 3);
  deepStrictEqual(pictures, [0]);
  // n70 dies: it stops answering; the others close the ring around it.
  live = [10, 130];
  await clock.advance(500);
  await clock.advance(0);
  const picture = gatherer.latest()!;
  deepStrictEqual(picture.unreachable, ["n70"]);
  deepStrictEqual(picture.nodes.map((n) => n.address), ["n10", "n130"]);
  ok(picture.events.some((e) => e.kind === "crash" && e.node === "n70"));
  unsubscribe();
  const before = asked.length;
  await clock.advance(5000);
  equal(asked.length, before, "the last page left: no more requests");
  await gatherer.close();
});
