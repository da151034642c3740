/**
 * Routing of frames to users wherever their session is: this server, the home server the
 * presence cache names, or the home the ring record names (a cache that missed a notice, a
 * server that just started). Also the fan-out to every live server, for frames whose target no
 * presence record lists (a connection in its hand-over grace, a new session's notice).
 *
 * One delivery call to a server at a time: the frames for it that come meanwhile go together in
 * the next call (a `deliver_batch`), so a busy ring makes fewer, larger calls instead of a call
 * per frame that the busy receiver answers too late.
 */
import {
  type ClusterRequest,
  type Delivery,
  MAX_DELIVER_BATCH,
  type ServerFrame,
} from "../../shared/mod.ts";
import type { Log } from "../telemetry/mod.ts";
import type { LocalSessions } from "./local_sessions.ts";
import type { ClusterCall, MembershipView } from "./ports.ts";
import type { Presence } from "./presence.ts";

/** Collaborators of {@link Routing}. */
export interface RoutingDeps {
  local: LocalSessions;
  presence: Presence;
  membership: MembershipView;
  call: ClusterCall;
  log: Log;
}

/** A frame waiting for a call to its user's home server, and who waits for the answer. */
interface Waiting {
  item: Delivery;
  failureEvent: string;
  done: (delivered: boolean) => void;
}

/** Delivers frames to users across the cluster. */
export class Routing {
  #deps: RoutingDeps;
  /**
   * Per server: the frames waiting while a call to it is under way. (Not replication's Batcher,
   * which starts a flush a microtask later: tried, bench:scale's relay p50/p99 rose from 6.6/125
   * to 9/165 ms.)
   */
  #outboxes = new Map<string, { waiting: Waiting[]; busy: boolean }>();

  /** Creates the service. */
  constructor(deps: RoutingDeps) {
    this.#deps = deps;
  }

  /**
   * Delivers `frame` to `to` wherever their session is; false if offline. When the cache names
   * no home (or a stale one), the presence record on the ring decides.
   */
  async deliver(to: string, frame: ServerFrame): Promise<boolean> {
    const { local, presence, membership } = this.#deps;
    if (local.deliver(to, frame)) return true;
    const cached = presence.homeOf(to);
    if (cached && cached !== membership.self && (await this.#deliverAt(cached, to, frame))) {
      return true;
    }
    const home = await presence.readHome(to, cached);
    return home !== undefined && await this.#deliverAt(home, to, frame);
  }

  /** Delivers `frame` to `username` on every other live server; true if any took it. */
  async deliverToOthers(username: string, frame: ServerFrame): Promise<boolean> {
    const { membership } = this.#deps;
    const others = membership.liveServers().filter((s) => s !== membership.self);
    const answers = await Promise.all(
      others.map((server) => this.#deliverAt(server, username, frame, "session_deliver_failed")),
    );
    return answers.some(Boolean);
  }

  #deliverAt(
    home: string,
    to: string,
    frame: ServerFrame,
    failureEvent = "deliver_failed",
  ): Promise<boolean> {
    let box = this.#outboxes.get(home);
    if (!box) this.#outboxes.set(home, box = { waiting: [], busy: false });
    const delivered = new Promise<boolean>((done) =>
      box.waiting.push({ item: { to, frame }, failureEvent, done })
    );
    this.#flush(home, box);
    return delivered;
  }

  /** Sends what waits for `home` (at most {@link MAX_DELIVER_BATCH}) unless a call is under way. */
  #flush(home: string, box: { waiting: Waiting[]; busy: boolean }): void {
    if (box.busy) return;
    if (box.waiting.length === 0) {
      if (this.#outboxes.get(home) === box) this.#outboxes.delete(home);
      return;
    }
    const batch = box.waiting.splice(0, MAX_DELIVER_BATCH);
    const request: ClusterRequest = batch.length === 1
      ? { v: 1, type: "deliver", ...batch[0]!.item }
      : { v: 1, type: "deliver_batch", items: batch.map((w) => w.item) };
    box.busy = true;
    this.#deps.call(home, request).then(
      (res) => {
        // "peer_offline" is the normal answer of a server without such a connection.
        if (res.type === "deliver_results" && res.delivered.length === batch.length) {
          batch.forEach((w, i) => w.done(res.delivered[i]!));
        } else batch.forEach((w) => w.done(batch.length === 1 && res.type === "ok"));
      },
      (err) => {
        // One line per failed call (with the first frame's user), not per frame.
        const { item, failureEvent } = batch[0]!;
        this.#deps.log(failureEvent, {
          to: item.to,
          home,
          type: item.frame.type,
          frames: batch.length,
          error: String(err),
        });
        for (const w of batch) w.done(false);
      },
    ).finally(() => {
      box.busy = false;
      this.#flush(home, box);
    });
  }
}
