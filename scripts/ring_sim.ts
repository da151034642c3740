/**
 * Ring simulator mode of the visualizer: drives the in-process CHORD simulation (SimRing on the
 * in-memory network and virtual time) and streams it to the same page the servers serve at
 * `/ring/view`. It builds a ring of `--nodes` nodes, lets it converge, crashes `--crash-fraction`
 * of them at once, and keeps running maintenance rounds (with `--churn` joins, leaves and crashes
 * per virtual second, if asked), one picture per round. Scrub the timeline on the page to replay.
 *
 * Usage: deno task ring:sim [--nodes=1024] [--churn=0] [--crash-fraction=0.5] [--seed=1]
 *          [--port=8090] [--hostname=127.0.0.1] [--pace-ms=500] [--settle-rounds=10]
 *          [--max-rounds=0]
 * Prints `ready <url of the page>` once it listens. `--pace-ms` is the real time between two
 * rounds (0: as fast as possible); `--max-rounds` stops the simulation (not the page) after that
 * many rounds (0: never).
 */
import { parseArgs } from "node:util";
import { pick } from "../server/chord/mod.ts";
import { SimRing } from "../server/chord/testing.ts";
import {
  createVisualizerHandler,
  PictureBuilder,
  PictureHub,
  VIEW_PATH,
} from "../server/visualizer/mod.ts";

/** Simulator settings from the command line. */
export interface SimOptions {
  nodes: number;
  /** Membership changes (join, leave or crash) per virtual second after the crash. */
  churn: number;
  crashFraction: number;
  seed: number;
  port: number;
  hostname: string;
  paceMs: number;
  /** Rounds between convergence and the mass crash. */
  settleRounds: number;
  maxRounds: number;
}

/** Parses the command line; throws a sentence naming the bad option. */
export function parseSimOptions(args: string[]): SimOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      nodes: { type: "string", default: "1024" },
      churn: { type: "string", default: "0" },
      "crash-fraction": { type: "string", default: "0.5" },
      seed: { type: "string", default: "1" },
      port: { type: "string", default: "8090" },
      hostname: { type: "string", default: "127.0.0.1" },
      "pace-ms": { type: "string", default: "500" },
      "settle-rounds": { type: "string", default: "10" },
      "max-rounds": { type: "string", default: "0" },
    },
  });
  const num = (name: keyof typeof values, min: number, max: number) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new RangeError(`--${name} must be a number in ${min}..${max}, got "${values[name]}"`);
    }
    return n;
  };
  return {
    nodes: Math.round(num("nodes", 1, 20_000)),
    churn: num("churn", 0, 1000),
    crashFraction: num("crash-fraction", 0, 0.95),
    seed: Math.round(num("seed", 0, 2 ** 31)),
    port: Math.round(num("port", 0, 65535)),
    hostname: String(values.hostname),
    paceMs: num("pace-ms", 0, 60_000),
    settleRounds: Math.round(num("settle-rounds", 0, 10_000)),
    maxRounds: Math.round(num("max-rounds", 0, 1e9)),
  };
}

const BITS = 32;
const ROUND_MS = 1000;
const SUCCESSOR_LIST_LENGTH = 8;

/** Runs the simulation and publishes one picture per step to `hub` until `signal` aborts. */
export async function simulate(options: SimOptions, hub: PictureHub, signal: AbortSignal) {
  const ring = new SimRing({
    bits: BITS,
    seed: options.seed,
    roundMs: ROUND_MS,
    node: { fingersPerRound: 1, successorListLength: SUCCESSOR_LIST_LENGTH },
  });
  const random = ring.network.random;
  const clock = ring.network.clock;
  const builder = new PictureBuilder({
    bits: BITS,
    replicas: 2,
    successorListLength: SUCCESSOR_LIST_LENGTH,
    source: "simulation",
    noticesMembership: false,
  });
  const publish = () =>
    hub.publish(
      builder.update(clock.now(), [...ring.nodes.values()].map((n) => ({ state: n.state() }))),
    );
  const pause = () => new Promise((resolve) => setTimeout(resolve, options.paceMs));
  const event = (kind: "join" | "leave" | "crash" | "created", node: string, detail: string) =>
    builder.record({ at: clock.now(), kind, node, detail });

  const first = ring.bootstrap();
  event("created", first.self.address, "Created the ring");
  const every = Math.max(1, Math.floor(options.nodes / 16));
  for (let i = 1; i < options.nodes && !signal.aborted; i++) {
    await ring.join();
    if (i % 8 === 0) await ring.round();
    if (i % every === 0) {
      event("join", "", `${i + 1} nodes have joined`);
      publish();
      await pause();
    }
  }
  let rounds = 0;
  const round = async () => {
    await ring.round();
    rounds++;
    publish();
    await pause();
  };
  const isDone = () => signal.aborted || (options.maxRounds > 0 && rounds >= options.maxRounds);
  while (!isDone() && ring.check("full").length > 0) await round();
  event("join", "", `Converged with ${ring.members().length} nodes`);
  for (let i = 0; i < options.settleRounds && !isDone(); i++) await round();
  if (!isDone() && options.crashFraction > 0) {
    const victims = ring.members().slice();
    const count = Math.floor(victims.length * options.crashFraction);
    for (let i = 0; i < count; i++) {
      const victim = victims.splice(Math.floor(random.next() * victims.length), 1)[0]!;
      ring.crash(victim);
    }
    event("crash", "", `${count} of ${count + victims.length} nodes crashed at once`);
    publish();
    await pause();
  }
  let changes = 0;
  while (!isDone()) {
    // Churn: changes due by now at the configured rate, each a join, leave or crash.
    changes += options.churn * (ROUND_MS / 1000);
    for (; changes >= 1; changes--) {
      const members = ring.members();
      const roll = random.next();
      if (members.length < 4 || roll < 0.4) {
        const node = await ring.join().catch(() => undefined);
        if (node) event("join", node.self.address, "Joined");
      } else if (roll < 0.7) {
        const node = pick(random, members);
        await ring.leave(node);
        event("leave", node.self.address, "Left gracefully");
      } else {
        const node = pick(random, members);
        ring.crash(node);
        event("crash", node.self.address, "Crashed");
      }
    }
    await round();
  }
}

if (import.meta.main) {
  let options: SimOptions;
  try {
    options = parseSimOptions(Deno.args);
  } catch (err) {
    console.error(`Error: ${(err as Error).message}`);
    Deno.exit(2);
  }
  const hub = new PictureHub();
  const handle = createVisualizerHandler({ source: hub });
  const stop = new AbortController();
  const server = Deno.serve({
    port: options.port,
    hostname: options.hostname,
    onListen: ({ hostname, port }) => {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`ready http://${host}:${port}${VIEW_PATH}`);
    },
  }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/") return Response.redirect(new URL(VIEW_PATH, url), 302);
    return await handle(req) ?? new Response("Not found", { status: 404 });
  });
  const shutdown = () => {
    stop.abort();
    hub.close();
    server.shutdown();
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  const started = performance.now();
  await simulate(options, hub, stop.signal);
  console.log(`simulation done after ${((performance.now() - started) / 1000).toFixed(1)} s`);
  await server.finished;
}
