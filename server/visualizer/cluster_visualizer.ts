/**
 * The visualizer of a real server, wired from the cluster's parts: its own report comes from the
 * {@link RingService}, other servers' reports come over the signed `/ring/report` endpoint, and a
 * {@link RingGatherer} turns them into the pictures streamed to `/ring/view`.
 */
import { type ClusterKey, type RingService, serveSigned, signedPost } from "../cluster/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { RingGatherer } from "./gatherer.ts";
import { createVisualizerHandler } from "./http.ts";
import type { RecordCounts } from "./picture.ts";
import {
  type NodeEvents,
  type NodeReport,
  parseNodeReport,
  parseReportRequest,
  RING_REPORT_PATH,
  type RingReportRequest,
} from "./report.ts";

/** Collaborators of {@link createClusterVisualizer}. */
export interface ClusterVisualizerDeps {
  ring: RingService;
  key: ClusterKey;
  metrics: Metrics;
  log: Log;
  /** Servers alive per membership (this one included). */
  liveServers(): string[];
  /** This server's record counts (accounts, presence, mailbox entries). */
  counts(): RecordCounts;
  /** This server's recent ring events (fed by its log). */
  events: NodeEvents;
}

/** Configuration of {@link createClusterVisualizer}. */
export interface ClusterVisualizerOptions {
  /** K, copies beyond the primary. @default 2 */
  replicas?: number;
  /** Required by the page and its stream when set. @default undefined */
  operatorToken?: string;
  /** Timeout of one report request, in ms. @default 1500 */
  timeoutMs?: number;
  /** Time between gathers while a page watches, in ms. @default 500 */
  intervalMs?: number;
}

/** A server's visualizer: its HTTP handler and its shutdown. */
export interface ClusterVisualizer {
  /** Answers the visualizer's paths; `undefined` for any other request. */
  handle(req: Request): Promise<Response | undefined>;
  /**
   * Records this server's graceful leave and, while another server's page is watching (it asked
   * for a report in the last few seconds), waits until that report went out, at most
   * {@link LEAVE_NOTICE_MS}: so the timeline says "leave" rather than "crash".
   */
  announceLeave(): Promise<void>;
  /** Ends the page streams (call before the HTTP server shuts down). */
  close(): Promise<void>;
}

/** Longest a graceful shutdown waits for a watching server to collect its leave, in ms. */
const LEAVE_NOTICE_MS = 1500;

/** Largest report request body, in bytes. */
const MAX_REQUEST_BYTES = 1024;

/** Builds the visualizer of a real server. */
export function createClusterVisualizer(
  deps: ClusterVisualizerDeps,
  options: ClusterVisualizerOptions = {},
): ClusterVisualizer {
  const { ring, key, metrics, log } = deps;
  const selfReport = (): NodeReport => {
    const { stats: _stats, ...view } = ring.view();
    return {
      v: 1,
      type: "ring_report",
      bits: ring.node.space.bits,
      view,
      counts: deps.counts(),
      events: deps.events.recent(),
      repaired: metrics.get("p2pchat_replication_repaired_total", { direction: "pushed" }) +
        metrics.get("p2pchat_replication_repaired_total", { direction: "pulled" }),
    };
  };
  let lastAskedAt = Number.NEGATIVE_INFINITY;
  let delivered: (() => void)[] = [];
  const servedReport = (): NodeReport => {
    lastAskedAt = Date.now();
    const report = selfReport();
    for (const resolve of delivered) resolve();
    delivered = [];
    return report;
  };
  const announceLeave = async () => {
    deps.events.add("leave", "Leaving the ring (graceful shutdown)");
    if (Date.now() - lastAskedAt > 3 * LEAVE_NOTICE_MS) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => delivered.push(resolve)),
      new Promise<void>((resolve) => timer = setTimeout(resolve, LEAVE_NOTICE_MS)),
    ]);
    clearTimeout(timer);
  };
  const timeoutMs = options.timeoutMs ?? 1500;
  const request = JSON.stringify({ v: 1, type: "ring_report" } satisfies RingReportRequest);
  const gatherer = new RingGatherer({
    self: ring.transport.localAddress,
    selfReport,
    liveServers: deps.liveServers,
    fetchReport: async (address) => {
      const { status, text } = await signedPost(
        key,
        address + RING_REPORT_PATH,
        request,
        timeoutMs,
      );
      if (status !== 200) throw new Error(`Report of ${address} refused: HTTP ${status}`);
      return parseNodeReport(text);
    },
    log,
  }, {
    replicas: options.replicas,
    bits: ring.node.space.bits,
    intervalMs: options.intervalMs,
  });
  const handle = createVisualizerHandler({
    source: gatherer,
    serveReport: (req) =>
      serveSigned(req, {
        name: "ring_report",
        maxBodyBytes: MAX_REQUEST_BYTES,
        parse: parseReportRequest,
        handle: servedReport,
      }, { key, metrics, log }),
  }, { operatorToken: options.operatorToken });
  return { handle, announceLeave, close: () => gatherer.close() };
}
