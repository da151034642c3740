/**
 * Routing of frames to users wherever their session is: this server, the home server the
 * presence cache names, or the home the ring record names (a cache that missed a notice, a
 * server that just started). Also the fan-out to every live server, for frames whose target no
 * presence record lists (a connection in its hand-over grace, a new session's notice).
 */
import type { ServerFrame } from "../../shared/mod.ts";
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

/** Delivers frames to users across the cluster. */
export class Routing {
  #deps: RoutingDeps;

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

  async #deliverAt(
    home: string,
    to: string,
    frame: ServerFrame,
    failureEvent = "deliver_failed",
  ): Promise<boolean> {
    try {
      // "peer_offline" is the normal answer of a server without such a connection.
      const res = await this.#deps.call(home, { v: 1, type: "deliver", to, frame });
      return res.type === "ok";
    } catch (err) {
      this.#deps.log(failureEvent, { to, home, type: frame.type, error: String(err) });
      return false;
    }
  }
}
