import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { ChordTransportError } from "./errors.ts";
import { IdSpace } from "./id.ts";
import type { ChordRequest, ChordResponse } from "./messages.ts";
import { SimDeadlockError } from "./sim_clock.ts";
import { SimNetwork } from "./sim_network.ts";
import { registerTransportConformanceTests } from "./transport_conformance.ts";

const space = new IdSpace(8);
const ping: ChordRequest = { v: 1, type: "ping" };

function echo(network: SimNetwork, address: string) {
  const transport = network.transport(address);
  const received: ChordRequest[] = [];
  transport.listen((request): Promise<ChordResponse> => {
    received.push(request);
    return Promise.resolve({ v: 1, type: "pong", node: { id: "01", address } });
  });
  return { transport, received };
}

Deno.test("a call takes two latencies of virtual time and never sleeps", async () => {
  const network = new SimNetwork(space, { latencyMs: { min: 7, max: 7 } });
  const a = echo(network, "sim:a");
  echo(network, "sim:b");
  const started = performance.now();
  const response = await network.run(a.transport.call("sim:b", ping));
  deepStrictEqual(response.type, "pong");
  deepStrictEqual(network.clock.now(), 14);
  ok(performance.now() - started < 1000);
});

Deno.test("the handler receives a validated copy, not the sender's object", async () => {
  const network = new SimNetwork(space);
  const a = echo(network, "sim:a");
  const b = echo(network, "sim:b");
  const request: ChordRequest = { v: 1, type: "notify", node: { id: "0a", address: "sim:a" } };
  await network.run(a.transport.call("sim:b", request));
  deepStrictEqual(b.received, [request]);
  ok(b.received[0] !== request);
});

Deno.test("a malformed request is rejected before it reaches the handler", async () => {
  const network = new SimNetwork(space);
  const a = echo(network, "sim:a");
  const b = echo(network, "sim:b");
  const bad = {
    v: 1,
    type: "notify",
    node: { id: "ZZ", address: "sim:a" },
  } as unknown as ChordRequest;
  await rejects(network.run(a.transport.call("sim:b", bad)), /node\.id/);
  deepStrictEqual(b.received, []);
});

Deno.test("calls to a crashed node time out after the RPC timeout", async () => {
  const network = new SimNetwork(space, { rpcTimeoutMs: 300 });
  const a = echo(network, "sim:a");
  echo(network, "sim:b");
  network.crash("sim:b");
  await rejects(network.run(a.transport.call("sim:b", ping)), (error: unknown) => {
    ok(error instanceof ChordTransportError);
    deepStrictEqual(error.code, "timeout");
    return true;
  });
  deepStrictEqual(network.clock.now(), 300);
});

Deno.test("a partition blocks traffic between groups until healed", async () => {
  const network = new SimNetwork(space);
  const a = echo(network, "sim:a");
  echo(network, "sim:b");
  echo(network, "sim:c");
  network.partition([["sim:a"], ["sim:b"]]);
  await rejects(network.run(a.transport.call("sim:b", ping)), ChordTransportError);
  deepStrictEqual((await network.run(a.transport.call("sim:c", ping))).type, "pong");
  network.heal();
  deepStrictEqual((await network.run(a.transport.call("sim:b", ping))).type, "pong");
});

Deno.test("message loss drops about the configured fraction, reproducibly from the seed", async () => {
  const outcomes = async (seed: number) => {
    const network = new SimNetwork(space, { seed, lossRate: 0.3 });
    const a = echo(network, "sim:a");
    echo(network, "sim:b");
    const results = await network.runAll(
      Array.from({ length: 400 }, () => a.transport.call("sim:b", ping)),
    );
    return results.map((r) => r.status);
  };
  const first = await outcomes(9);
  deepStrictEqual(await outcomes(9), first);
  const failed = first.filter((s) => s === "rejected").length / first.length;
  // A call fails if its request or its response is lost: 1 - 0.7² = 0.51.
  ok(failed > 0.4 && failed < 0.62, `failed fraction ${failed}`);
});

Deno.test("an operation waiting on nothing the network delivers is reported, not hung", async () => {
  const network = new SimNetwork(space);
  await rejects(network.run(new Promise(() => {})), SimDeadlockError);
});

registerTransportConformanceTests("SimNetwork", () => {
  const network = new SimNetwork(space, { rpcTimeoutMs: 100 });
  return Promise.resolve({
    space,
    a: network.transport("sim:a"),
    b: network.transport("sim:b"),
    unusedAddress: "sim:nobody",
    run: (operation) => network.run(operation),
    dispose: () => Promise.resolve(),
  });
});
