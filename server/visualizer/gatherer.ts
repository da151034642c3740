/**
 * Gathers the whole ring server-side for the page: every round it takes this server's own
 * {@link NodeReport} and asks every other live server for theirs over the signed
 * {@link RING_REPORT_PATH} endpoint, judges the states with the ring's invariant checker
 * ({@link PictureBuilder}), and publishes the picture. The browser only ever talks to the server
 * that served the page. Rounds run only while at least one page watches.
 */
import { type Clock, systemClock, type TimerHandle } from "../../shared/clock.ts";
import type { Log } from "../telemetry/mod.ts";
import { type NodeInput, PictureBuilder, type RingPicture } from "./picture.ts";
import { type NodeReport, reportState } from "./report.ts";
import { PictureHub, type PictureSource } from "./source.ts";

/** Collaborators of a {@link RingGatherer}. */
export interface RingGathererDeps {
  /** This server's address. */
  self: string;
  /** This server's own report (no request needed). */
  selfReport(): NodeReport;
  /** The servers alive per cluster membership (this one included). */
  liveServers(): string[];
  /** Asks another server for its report (a signed request); rejects when it cannot answer. */
  fetchReport(address: string): Promise<NodeReport>;
  log: Log;
  /** @default systemClock */
  clock?: Clock;
}

/** Configuration of a {@link RingGatherer}. */
export interface RingGathererOptions {
  /** Time between two gathers while watched, in ms. @default 500 */
  intervalMs?: number;
  /** K, copies beyond the primary. @default 2 */
  replicas?: number;
  /** Successor list length r the servers run with. @default 8 */
  successorListLength?: number;
  /** Identifier bits. @default 160 */
  bits?: number;
}

/** The cluster's picture source: gathers while watched, publishes every round. */
export class RingGatherer implements PictureSource {
  readonly #deps: RingGathererDeps;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #builder: PictureBuilder;
  readonly #hub: PictureHub;
  #timer: TimerHandle | undefined;
  #round: Promise<void> | undefined;
  #isWatched = false;

  /** Creates the gatherer; it starts when the first page subscribes. */
  constructor(deps: RingGathererDeps, options: RingGathererOptions = {}) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.#intervalMs = options.intervalMs ?? 500;
    this.#builder = new PictureBuilder({
      bits: options.bits,
      replicas: options.replicas,
      successorListLength: options.successorListLength,
      source: "cluster",
    });
    this.#hub = new PictureHub((isWatched) => {
      this.#isWatched = isWatched;
      if (isWatched) this.#schedule(0);
      else if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    });
  }

  latest(): RingPicture | undefined {
    return this.#hub.latest();
  }

  subscribe(listener: (picture: RingPicture) => void): () => void {
    return this.#hub.subscribe(listener);
  }

  onClose(listener: () => void): () => void {
    return this.#hub.onClose(listener);
  }

  /** Gathers once now and publishes the picture (also what every round does). */
  async gather(): Promise<RingPicture> {
    const { self, liveServers, fetchReport, selfReport } = this.#deps;
    const others = liveServers().filter((a) => a !== self);
    const unreachable: string[] = [];
    const inputs: NodeInput[] = [];
    const toInput = (report: NodeReport): NodeInput => ({
      state: reportState(report),
      counts: report.counts,
      events: report.events,
      repaired: report.repaired,
    });
    inputs.push(toInput(selfReport()));
    const answers = await Promise.allSettled(others.map((a) => fetchReport(a)));
    answers.forEach((answer, i) => {
      if (answer.status === "fulfilled") {
        try {
          inputs.push(toInput(answer.value));
          return;
        } catch { /* a bad id: treated as unreachable */ }
      }
      unreachable.push(others[i]!);
    });
    const picture = this.#builder.update(this.#clock.now(), inputs, unreachable);
    this.#hub.publish(picture);
    return picture;
  }

  /** Stops gathering and ends every page's stream (before the HTTP server shuts down). */
  async close(): Promise<void> {
    this.#isWatched = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#hub.close();
    await this.#round;
  }

  #schedule(delayMs: number): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#round) return;
      this.#round = this.gather()
        .then(() => {}, (err) => this.#deps.log("visualizer_gather_failed", { error: String(err) }))
        .finally(() => {
          this.#round = undefined;
          if (this.#isWatched) this.#schedule(this.#intervalMs);
        });
    }, delayMs);
  }
}
