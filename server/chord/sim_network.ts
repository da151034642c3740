/**
 * An in-memory network of simulated ring nodes, for tests and benchmarks: a discrete-event
 * simulation on virtual time. Every message is delivered by an event at `now + latency`; a lost
 * message, a crashed or partitioned peer shows up as a timeout after `rpcTimeoutMs` of virtual
 * time. Nothing sleeps: {@link SimNetwork.run} executes events in time order and advances the
 * {@link SimClock}, so a 1,024-node ring runs in seconds and replays exactly from its seed.
 *
 * Each request and response is copied with `structuredClone` and re-validated with the same
 * parsers a real transport uses, so simulations exercise serialization too.
 */

import { setImmediate } from "node:timers";
import { SimClock } from "./clock.ts";
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

/** {@link SimNetwork.run} found no event left while the operation was still pending. */
export class SimDeadlockError extends Error {
  override name = "SimDeadlockError";
  /** Creates the error. */
  constructor() {
    super("Cannot finish the simulated operation: it waits on something no event will deliver");
  }
}

interface SimEvent {
  readonly time: number;
  readonly seq: number;
  readonly fire: () => void;
}

interface Endpoint {
  handler: ChordRequestHandler | undefined;
  isClosed: boolean;
}

/** Yields to the macrotask queue, so every pending microtask (promise continuation) has run. */
function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
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
  readonly #queue: SimEvent[] = [];
  #seq = 0;
  #isRunning = false;

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
   * simulated nodes only make progress inside `run`. Throws {@link SimDeadlockError} if the
   * operation waits on something no event will deliver.
   */
  async run<T>(operation: Promise<T>): Promise<T> {
    if (this.#isRunning) throw new RangeError("Cannot run the simulation: it is already running");
    this.#isRunning = true;
    let isSettled = false;
    const settled = operation.finally(() => {
      isSettled = true;
    });
    settled.catch(() => {});
    try {
      for (;;) {
        await drainMicrotasks();
        if (isSettled) return await settled;
        const next = this.#queue[0];
        if (next === undefined) throw new SimDeadlockError();
        this.clock.advanceTo(next.time);
        // Fire every event due now before letting continuations run, for determinism and speed.
        while (this.#queue.length > 0 && this.#queue[0]!.time <= next.time) {
          this.#pop().fire();
          this.stats.events++;
        }
      }
    } finally {
      this.#isRunning = false;
    }
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
    const queue = this.#queue;
    queue.push({ time, seq: this.#seq++, fire });
    // Sift up (binary min-heap on time, then insertion order).
    let i = queue.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(queue[i]!, queue[parent]!)) break;
      [queue[i], queue[parent]] = [queue[parent]!, queue[i]!];
      i = parent;
    }
  }

  #pop(): SimEvent {
    const queue = this.#queue;
    const top = queue[0]!;
    const last = queue.pop()!;
    if (queue.length > 0) {
      queue[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let smallest = i;
        if (l < queue.length && before(queue[l]!, queue[smallest]!)) smallest = l;
        if (r < queue.length && before(queue[r]!, queue[smallest]!)) smallest = r;
        if (smallest === i) break;
        [queue[i], queue[smallest]] = [queue[smallest]!, queue[i]!];
        i = smallest;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}
