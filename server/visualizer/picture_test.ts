import { deepStrictEqual, equal, ok } from "node:assert/strict";
import type { ChordNodeState, NodeRef } from "../chord/mod.ts";
import { PictureBuilder } from "./picture.ts";
import { renderPanel, renderRing } from "./page/render.js";

/** A correct 4-node ring on an 8-bit space, as each node would report it. */
function ringOf(ids: number[]): ChordNodeState[] {
  const refs: NodeRef[] = ids.map((id) => ({ id: BigInt(id), address: `n${id}` }));
  return refs.map((self, i) => ({
    self,
    isMember: true,
    predecessor: refs[(i - 1 + refs.length) % refs.length],
    successorList: [1, 2, 3].map((k) => refs[(i + k) % refs.length]!),
    fingers: [refs[(i + 1) % refs.length]!, refs[(i + 2) % refs.length]!],
  }));
}

const OPTIONS = { bits: 8, replicas: 2, successorListLength: 3 };

Deno.test("a correct ring is drawn in id order with no violations and K + 1 replicas", () => {
  const picture = new PictureBuilder(OPTIONS).update(
    0,
    ringOf([10, 70, 130, 200]).map((state) => ({ state })),
  );
  deepStrictEqual(picture.nodes.map((n) => n.address), ["n10", "n70", "n130", "n200"]);
  deepStrictEqual(picture.nodes.map((n) => n.succ[0]), [1, 2, 3, 0]);
  deepStrictEqual(picture.nodes[0]!.replicas, [0, 1, 2]);
  equal(picture.violationCount, 0);
  ok(Math.abs(picture.nodes[2]!.pos - 130 / 256) < 1e-9);
  const svg = renderRing(picture, { selected: null });
  ok(svg.includes("invariants hold"));
  ok(!svg.includes("violation"));
});

Deno.test("a hand-made wrong successor is shown as a violation on the ring and in the list", () => {
  const states = ringOf([10, 70, 130, 200]);
  // n70 skips n130: its successor is n200.
  const broken = states.map((s) =>
    s.self.address === "n70"
      ? { ...s, successorList: [states[3]!.self, states[0]!.self, states[1]!.self] }
      : s
  );
  const picture = new PictureBuilder(OPTIONS).update(0, broken.map((state) => ({ state })));
  const wrong = picture.violations.filter((v) => v.rule === "wrong_successor");
  equal(wrong.length, 1);
  ok(wrong[0]!.nodes.includes(1), "the violation names n70");
  ok(wrong[0]!.message.includes("n70") && wrong[0]!.message.includes("n200"));
  const svg = renderRing(picture, { selected: null });
  ok(/class="node violation[^"]*" data-id="46"/.test(svg), "n70 (id 0x46) is drawn as violating");
  ok(svg.includes('class="succ wrong"'), "its successor arrow is drawn as wrong");
  ok(!/class="node violation[^"]*" data-id="0a"/.test(svg), "n10 is not marked");
  const panel = renderPanel(picture, { selected: null });
  ok(panel.includes('data-rule="wrong_successor"'));
});

Deno.test("a node that stops reporting is a crash on the timeline; the ring correct again is noted", () => {
  const builder = new PictureBuilder(OPTIONS);
  builder.update(0, ringOf([10, 70, 130, 200]).map((state) => ({ state })));
  const after = builder.update(1000, ringOf([10, 70, 200]).map((state) => ({ state })));
  ok(after.events.some((e) => e.kind === "crash" && e.node === "n130"));
  const broken = builder.update(
    1500,
    ringOf([10, 70, 200]).map((state) =>
      state.self.address === "n10" ? { state: { ...state, predecessor: undefined } } : { state }
    ),
  );
  ok(broken.violationCount > 0);
  ok(broken.events.some((e) => e.kind === "violated"));
  const healed = builder.update(2000, ringOf([10, 70, 200]).map((state) => ({ state })));
  equal(healed.violationCount, 0);
  equal(healed.events.at(-1)?.kind, "correct");
});

Deno.test("a node's own events are added once, and a reported leave is not called a crash", () => {
  const builder = new PictureBuilder(OPTIONS);
  const states = ringOf([10, 70, 130]);
  const leave = { seq: 0, at: 5, kind: "leave" as const, detail: "Leaving" };
  builder.update(0, states.map((state) => ({ state })));
  builder.update(
    1,
    states.map((state) => ({ state, events: state.self.address === "n70" ? [leave] : [] })),
  );
  builder.update(
    2,
    states.map((state) => ({ state, events: state.self.address === "n70" ? [leave] : [] })),
  );
  const after = builder.update(3, ringOf([10, 130]).map((state) => ({ state })));
  equal(after.events.filter((e) => e.kind === "leave").length, 1);
  ok(!after.events.some((e) => e.kind === "crash"));
});

Deno.test("selecting a node draws its key range, fingers and replica set", () => {
  const picture = new PictureBuilder(OPTIONS).update(
    0,
    ringOf([10, 70, 130, 200]).map((state) => ({ state })),
  );
  const svg = renderRing(picture, { selected: picture.nodes[0]!.id });
  ok(svg.includes('class="range"'));
  equal((svg.match(/class="finger"/g) ?? []).length, 2);
  equal((svg.match(/class="node replica"/g) ?? []).length, 2);
  const panel = renderPanel(picture, { selected: picture.nodes[0]!.id });
  ok(panel.includes("Replicas (K + 1 = 3)"));
});
