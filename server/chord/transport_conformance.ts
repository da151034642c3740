/**
 * The conformance suite every {@link Transport} implementation must pass: one suite, run against
 * the in-memory {@link SimNetwork} (in `sim_network_test.ts`) and against the real HTTP transport
 * (by its own test file), so both behave the same for the ring.
 *
 * @example
 * ```ts
 * // in a *_test.ts file
 * registerTransportConformanceTests("http transport", async () => {
 *   const a = await startHttpTransport(...), b = await startHttpTransport(...);
 *   return { space, a, b, unusedAddress: "https://127.0.0.1:1", run: (p) => p, dispose: async () => {...} };
 * });
 * ```
 */

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { ChordProtocolError, ChordTransportError } from "./errors.ts";
import type { IdSpace } from "./id.ts";
import type { ChordRequest, ChordResponse } from "./messages.ts";
import type { Transport } from "./transport.ts";

/** Two connected transports under test, and how to drive them. */
export interface TransportFixture {
  /** The id space the transports validate against. */
  readonly space: IdSpace;
  /** First endpoint. */
  readonly a: Transport;
  /** Second endpoint, reachable from `a`. */
  readonly b: Transport;
  /** An address where nothing listens. */
  readonly unusedAddress: string;
  /** Drives an operation to completion (the simulation's `run`; identity for real transports). */
  run<T>(operation: Promise<T>): Promise<T>;
  /** Releases everything the fixture started. */
  dispose(): Promise<void>;
}

/** Registers the conformance tests with `Deno.test`, each on a fresh fixture. */
export function registerTransportConformanceTests(
  name: string,
  makeFixture: () => Promise<TransportFixture>,
): void {
  const test = (behaviour: string, body: (fixture: TransportFixture) => Promise<void>) =>
    Deno.test(`${name}: ${behaviour}`, async () => {
      const fixture = await makeFixture();
      try {
        await body(fixture);
      } finally {
        await fixture.dispose();
      }
    });

  const pong = (address: string, space: IdSpace): ChordResponse => ({
    v: 1,
    type: "pong",
    node: { id: space.toHex(0n), address },
  });

  test("a call reaches the handler and resolves with its response", async (f) => {
    const received: [ChordRequest, string][] = [];
    f.b.listen((request, from) => {
      received.push([request, from]);
      return Promise.resolve(pong(f.b.localAddress, f.space));
    });
    const request: ChordRequest = { v: 1, type: "find_successor", key: f.space.toHex(5n) };
    const response = await f.run(f.a.call(f.b.localAddress, request));
    deepStrictEqual(response, pong(f.b.localAddress, f.space));
    deepStrictEqual(received.length, 1);
    deepStrictEqual(received[0]![0], request);
  });

  test("an error response from the handler is delivered as a response", async (f) => {
    f.b.listen(() => Promise.resolve({ v: 1, type: "error", code: "not_a_member", message: "no" }));
    const response = await f.run(f.a.call(f.b.localAddress, { v: 1, type: "ping" }));
    deepStrictEqual(response.type, "error");
  });

  test("a malformed response arrives as an error response, never as garbage", async (f) => {
    f.b.listen(() => Promise.resolve({ v: 1, type: "pong" } as unknown as ChordResponse));
    const response = await f.run(f.a.call(f.b.localAddress, { v: 1, type: "ping" }));
    deepStrictEqual(response.type, "error");
  });

  test("a malformed request is refused and never reaches the handler", async (f) => {
    let calls = 0;
    f.b.listen(() => {
      calls++;
      return Promise.resolve(pong(f.b.localAddress, f.space));
    });
    const bad = { v: 1, type: "find_successor", key: "not hex" } as unknown as ChordRequest;
    await rejects(
      f.run(f.a.call(f.b.localAddress, bad)),
      (error: unknown) =>
        error instanceof ChordProtocolError || error instanceof ChordTransportError,
    );
    deepStrictEqual(calls, 0);
  });

  test("a call to an address where nothing listens fails with ChordTransportError", async (f) => {
    await rejects(
      f.run(f.a.call(f.unusedAddress, { v: 1, type: "ping" })),
      (error: unknown) => error instanceof ChordTransportError && error.address === f.unusedAddress,
    );
  });

  test("a closed transport is unreachable", async (f) => {
    f.b.listen(() => Promise.resolve(pong(f.b.localAddress, f.space)));
    f.b.close();
    await rejects(f.run(f.a.call(f.b.localAddress, { v: 1, type: "ping" })), ChordTransportError);
  });

  test("concurrent calls each get their own response", async (f) => {
    f.b.listen((request) =>
      Promise.resolve({
        v: 1,
        type: "closer_nodes",
        nodes: [{ id: request.type === "find_successor" ? request.key : "", address: "x" }],
        successors: [],
      })
    );
    const keys = [1n, 2n, 3n, 4n, 5n].map((k) => f.space.toHex(k));
    const responses = await f.run(
      Promise.all(
        keys.map((key) => f.a.call(f.b.localAddress, { v: 1, type: "find_successor", key })),
      ),
    );
    responses.forEach((response, i) => {
      ok(response.type === "closer_nodes");
      deepStrictEqual(response.nodes[0]!.id, keys[i]);
    });
  });
}
