import { deepStrictEqual } from "node:assert/strict";
import { IdSpace } from "./id.ts";
import { nodeStateToJson } from "./ring_json.ts";

Deno.test("ring state JSON lists each distinct finger once, with hex ids", () => {
  const space = new IdSpace(8);
  const n = (id: number) => ({ id: BigInt(id), address: `sim:${id}` });
  const json = nodeStateToJson(space, {
    self: n(10),
    isMember: true,
    predecessor: undefined,
    successorList: [n(20), n(200)],
    fingers: [n(20), n(20), n(20), n(20), n(200), n(200), undefined, n(200)],
  });
  deepStrictEqual(json, {
    bits: 8,
    self: { id: "0a", address: "sim:10" },
    isMember: true,
    predecessor: null,
    successorList: [{ id: "14", address: "sim:20" }, { id: "c8", address: "sim:200" }],
    fingers: [
      { index: 0, start: "0b", node: { id: "14", address: "sim:20" } },
      { index: 4, start: "1a", node: { id: "c8", address: "sim:200" } },
    ],
  });
  // It is plain JSON.
  deepStrictEqual(JSON.parse(JSON.stringify(json)), json);
});
