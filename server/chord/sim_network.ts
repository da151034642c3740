/**
 * An in-memory network of simulated ring nodes, for tests and benchmarks: a discrete-event
 * simulation on virtual time. Every message is delivered by a timer on the network's
 * {@link SimClock} at `now + latency`; a lost message, a crashed or partitioned peer shows up as a
 * timeout after `rpcTimeoutMs` of virtual time. Nothing sleeps: {@link SimNetwork.run} (or the
 * clock's `advance`) fires those timers in time order, together with any other timers set on the
 * same clock (a server's maintenance loop), so a 1,024-node ring runs in seconds and replays
 * exactly from its seed.
 *
 * Each request and response is copied with `structuredClone` and re-validated with the same
 * parsers a real transport uses, so simulations exercise serialization too.
 */

import { ChordProtocolError, ChordTransportError } from "./errors.ts";
import type { IdSpace } from "./id.ts";
import {
  type ChordRequest,
  type ChordResponse,
  parseChordRequest,
  parseChordResponse,
} from "./messages.ts";
import type { NodeAddress } from "./node_ref.ts";
import { type Random, randomInt, seededRandom } from "./random.ts";
import { SimClock } from "./sim_clock.ts";
import type { ChordRequestHandler, Transport } from "./transport.ts";

/** Configuration of a {@link SimNetwork}. */
export interface SimNetworkOptions {
  /**
   * Seed of the network's random source (latency, loss).
   * @default {1}
   */
  readonly seed?: number;
  /**
   * One-way message latency in virtual milliseconds, drawn uniformly from `[min, max]` (integers).
   * @default {{ min: 1, max: 5 }}
   */
  readonly latencyMs?: { readonly min: number; readonly max: number };
  /**
   * Probability that any one message (request or response) is lost.
   * @default {0}
   */
  readonly lossRate?: number;
  /**
   * A call with no response fails with a timeout after this much virtual time.
   * @default {1000}
   */
  readonly rpcTimeoutMs?: number;
}

/** Message counters of a {@link SimNetwork}. */
export interface SimNetworkStats {
  /** Requests sent. */
  requests: number;
  /** Messages (requests or responses) dropped by loss, crash or partition. */
  dropped: number;
  /** Events executed. */
  events: number;
}

interface Endpoint {
  handler: ChordRequestHandler | undefined;
  isClosed: boolean;
}

/** A simulated network carrying ring RPCs between in-process nodes. */
export class SimNetwork {
  /** Virtual time of the simulation. */
  readonly clock: SimClock = new SimClock();
  /** The network's seeded random source (also handy for the test driving it). */
  readonly random: Random;
  /** Message counters. */
  readonly stats: SimNetworkStats = { requests: 0, dropped: 0, events: 0 };

  readonly #space: IdSpace;
  readonly #endpoints = new Map<NodeAddress, Endpoint>();
  readonly #crashed = new Set<NodeAddress>();
  #partitionOf = new Map<NodeAddress, number>();
  #latency: { min: number; max: number };
  #lossRate: number;
  readonly #timeoutMs: number;

  /** Creates an empty network for ids of `space`. */
  constructor(space: IdSpace, options: SimNetworkOptions = {}) {
    this.#space = space;
    this.random = seededRandom(options.seed ?? 1);
    this.#latency = { ...(options.latencyMs ?? { min: 1, max: 5 }) };
    this.#lossRate = options.lossRate ?? 0;
    this.#timeoutMs = options.rpcTimeoutMs ?? 1000;
  }

  /** Creates the transport of a new node at `address`. */
  transport(address: NodeAddress): Transport {
    const existing = this.#endpoints.get(address);
    if (existing !== undefined && !existing.isClosed) {
      throw new RangeError(`Cannot create transport: ${address} is already in use`);
    }
    const endpoint: Endpoint = { handler: undefined, isClosed: false };
    this.#endpoints.set(address, endpoint);
    this.#crashed.delete(address);
    return {
      localAddress: address,
      call: (to, request) => this.#call(address, to, request),
      listen: (handler) => {
        endpoint.handler = handler;
      },
      close: () => {
        endpoint.isClosed = true;
        endpoint.handler = undefined;
      },
    };
  }

  /** Crashes the node at `address`: it stops answering and its own calls fail. */
  crash(address: NodeAddress): void {
    this.#crashed.add(address);
  }

  /** Whether the node at `address` has crashed. */
  isCrashed(address: NodeAddress): boolean {
    return this.#crashed.has(address);
  }

  /**
   * Splits the network: nodes in different groups cannot reach each other. Nodes in no group
   * still reach everyone. Replaces any previous partition.
   */
  partition(groups: readonly (readonly NodeAddress[])[]): void {
    this.#partitionOf = new Map();
    groups.forEach((group, index) =>
      group.forEach((address) => this.#partitionOf.set(address, index))
    );
  }

  /** Removes any partition. */
  heal(): void {
    this.#partitionOf = new Map();
  }

  /** Sets the probability that a message is lost. */
  setLossRate(rate: number): void {
    this.#lossRate = rate;
  }

  /** Sets the one-way latency range in virtual milliseconds. */
  setLatency(min: number, max: number): void {
    this.#latency = { min, max };
  }

  /**
   * Runs the simulation until `operation` settles and returns its result; operations on the
   * simulated nodes only make progress while the clock runs (here or in `clock.advance`). Throws
   * `SimDeadlockError` if the operation waits on something no event will deliver.
   */
  run<T>(operation: Promise<T>): Promise<T> {
    return this.clock.run(operation);
  }

  /** Runs several operations concurrently until all settle; returns their outcomes in order. */
  runAll<T>(operations: readonly Promise<T>[]): Promise<PromiseSettledResult<T>[]> {
    return this.run(Promise.allSettled(operations));
  }

  /** Whether a message can go from `from` to `to` (a request needs a handler there, a response not). */
  #isReachable(from: NodeAddress, to: NodeAddress, isRequest: boolean): boolean {
    if (this.#crashed.has(to) || this.#crashed.has(from)) return false;
    const endpoint = this.#endpoints.get(to);
    if (endpoint === undefined || endpoint.isClosed) return false;
    if (isRequest && endpoint.handler === undefined) return false;
    const a = this.#partitionOf.get(from);
    const b = this.#partitionOf.get(to);
    return a === undefined || b === undefined || a === b;
  }

  #delivers(from: NodeAddress, to: NodeAddress, isRequest: boolean): boolean {
    const ok = this.#isReachable(from, to, isRequest) &&
      !(this.#lossRate > 0 && this.random.next() < this.#lossRate);
    if (!ok) this.stats.dropped++;
    return ok;
  }

  #latencyMs(): number {
    const { min, max } = this.#latency;
    return min + randomInt(this.random, max - min + 1);
  }

  #call(from: NodeAddress, to: NodeAddress, request: ChordRequest): Promise<ChordResponse> {
    this.stats.requests++;
    const sentAt = this.clock.now();
    return new Promise<ChordResponse>((resolve, reject) => {
      const timeout = () =>
        this.#schedule(sentAt + this.#timeoutMs, () =>
          reject(
            new ChordTransportError(
              "timeout",
              to,
              `Request ${request.type} to ${to} timed out after ${this.#timeoutMs} ms`,
            ),
          ));
      if (!this.#delivers(from, to, true)) return timeout();
      let copy: ChordRequest;
      try {
        copy = parseChordRequest(structuredClone(request), this.#space);
      } catch (error) {
        return reject(error);
      }
      this.#schedule(this.clock.now() + this.#latencyMs(), () => {
        const handler = this.#endpoints.get(to)?.handler;
        if (handler === undefined || this.#crashed.has(to)) {
          this.stats.dropped++;
          return timeout();
        }
        handler(copy, from).then(
          (response) => {
            if (!this.#delivers(to, from, false)) return timeout();
            let answer: ChordResponse;
            try {
              answer = parseChordResponse(structuredClone(response), this.#space);
            } catch (error) {
              const reason = error instanceof ChordProtocolError ? error.message : String(error);
              answer = { v: 1, type: "error", code: "bad_response", message: reason };
            }
            this.#schedule(this.clock.now() + this.#latencyMs(), () => resolve(answer));
          },
          (error: unknown) =>
            this.#schedule(
              this.clock.now() + this.#latencyMs(),
              () =>
                reject(
                  new ChordTransportError(
                    "remote_error",
                    to,
                    `Request ${request.type} to ${to} failed: ${error}`,
                  ),
                ),
            ),
        );
      });
    });
  }

  #schedule(time: number, fire: () => void): void {
    this.clock.setTimer(() => {
      this.stats.events++;
      fire();
    }, time - this.clock.now());
  }
}
