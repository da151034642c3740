/**
 * The CHORD ring's test harness, kept out of the public face ({@link ./mod.ts}) because only tests
 * and benchmarks use it: virtual time ({@link SimClock}), the in-memory network ({@link SimNetwork}),
 * a ring driven in rounds with ground truth ({@link SimRing}, {@link OwnerIndex}), and the
 * conformance suite every `Transport` implementation must pass.
 *
 * @example
 * ```ts
 * import { SimRing } from "../chord/testing.ts";
 *
 * const ring = new SimRing({ bits: 32, seed: 7 });
 * ring.bootstrap();
 * for (let i = 1; i < 64; i++) await ring.join();
 * await ring.converge(100);
 * const node = ring.members()[0]!;
 * const { owner } = await ring.network.run(node.lookup(ring.space.idFromKey("user:alice")));
 * ```
 */

export { SimClock, SimDeadlockError } from "./sim_clock.ts";
export { SimNetwork, type SimNetworkOptions, type SimNetworkStats } from "./sim_network.ts";
export { OwnerIndex, type RoundReport, SimRing, type SimRingOptions } from "./sim_ring.ts";
export {
  registerTransportConformanceTests,
  type TransportFixture,
} from "./transport_conformance.ts";
