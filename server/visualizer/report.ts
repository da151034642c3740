/**
 * What one server tells the visualizer of another about itself, over the signed endpoint
 * {@link RING_REPORT_PATH}: its ring state (as `/ring` serves it), its record counts, its recent
 * ring events and how much its replication has repaired. Validated on arrival like every
 * server-to-server message; counts only, never usernames or contents.
 */
import { type ChordNodeState, IdSpace, type NodeRef } from "../chord/mod.ts";
import type { RingView } from "../cluster/mod.ts";
import {
  ProtocolError,
  readArray,
  readBoolean,
  readEnvelope,
  readNumber,
  readObject,
  readString,
} from "../../shared/mod.ts";
import type { Log } from "../telemetry/mod.ts";
import type { RecordCounts, RingEventKind } from "./picture.ts";

/** Path of the signed endpoint every server answers with its {@link NodeReport}. */
export const RING_REPORT_PATH = "/ring/report";

/** The request: no parameters. */
export interface RingReportRequest {
  v: 1;
  type: "ring_report";
}

/** One event a node recorded about itself. */
export interface NodeEvent {
  /** Per-node sequence number, increasing. */
  seq: number;
  at: number;
  kind: RingEventKind;
  detail: string;
}

/** A node's answer. */
export interface NodeReport {
  v: 1;
  type: "ring_report";
  /** Identifier bits of its ring. */
  bits: number;
  view: Omit<RingView, "stats">;
  counts: RecordCounts | null;
  events: NodeEvent[];
  repaired: number;
}

/** Most events one node keeps and reports. */
export const MAX_NODE_EVENTS = 50;

/** Parses a report request body. */
export function parseReportRequest(text: string): RingReportRequest {
  readEnvelope(JSON.parse(text), 1, ["ring_report"]);
  return { v: 1, type: "ring_report" };
}

const KINDS: readonly RingEventKind[] = [
  "join",
  "created",
  "leave",
  "crash",
  "merge",
  "repair",
  "handoff",
  "violated",
  "correct",
];
const ADDRESS = { min: 1, max: 512 };
const HEX = { min: 1, max: 64, pattern: /^[0-9a-f]+$/ };

/** Parses a report answer, or throws a `ProtocolError` naming the bad field. */
export function parseNodeReport(text: string): NodeReport {
  const obj = readObject(JSON.parse(text), "");
  readEnvelope(obj, 1, ["ring_report"]);
  const bits = readNumber(obj, "bits", "", { min: 1, max: 160, integer: true });
  const v = readObject(obj.view, "view");
  const ref = (value: unknown, path: string) => {
    const o = readObject(value, path);
    return { id: readString(o, "id", path, HEX), address: readString(o, "address", path, ADDRESS) };
  };
  const view = {
    self: ref(v.self, "view.self"),
    isMember: readBoolean(v, "isMember", "view"),
    predecessor: v.predecessor === null ? null : ref(v.predecessor, "view.predecessor"),
    successors: readArray(v, "successors", "view", 64, ref),
    fingers: readArray(v, "fingers", "view", 160, (f, p) => (f === null ? null : ref(f, p))),
  };
  let counts: RecordCounts | null = null;
  if (obj.counts !== null) {
    const c = readObject(obj.counts, "counts");
    const count = (key: string) =>
      readNumber(c, key, "counts", { min: 0, max: 1e12, integer: true });
    counts = {
      accounts: count("accounts"),
      presence: count("presence"),
      mailbox: count("mailbox"),
    };
  }
  const events = readArray(obj, "events", "", MAX_NODE_EVENTS, (e, path) => {
    const o = readObject(e, path);
    const kind = readString(o, "kind", path, { max: 16 }) as RingEventKind;
    if (!KINDS.includes(kind)) {
      throw new ProtocolError("bad_frame", `${path}.kind`, `Unknown event kind ${kind}`);
    }
    return {
      seq: readNumber(o, "seq", path, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true }),
      at: readNumber(o, "at", path, { min: 0, max: Number.MAX_SAFE_INTEGER }),
      kind,
      detail: readString(o, "detail", path, { max: 300 }),
    };
  });
  const repaired = readNumber(obj, "repaired", "", { min: 0, max: 1e15, integer: true });
  return { v: 1, type: "ring_report", bits, view, counts, events, repaired };
}

/** The ring state in a report, as the invariant checker reads it (throws on a bad id). */
export function reportState(report: NodeReport): ChordNodeState {
  const space = new IdSpace(report.bits);
  const ref = (n: { id: string; address: string }, path: string): NodeRef => ({
    id: space.fromHex(n.id, path),
    address: n.address,
  });
  const { view } = report;
  return {
    self: ref(view.self, "view.self"),
    isMember: view.isMember,
    predecessor: view.predecessor ? ref(view.predecessor, "view.predecessor") : undefined,
    successorList: view.successors.map((n, i) => ref(n, `view.successors.${i}`)),
    fingers: view.fingers.map((f, i) => (f ? ref(f, `view.fingers.${i}`) : undefined)),
  };
}

/** Which log events of this server become timeline events, and how they read. */
const LOGGED: Readonly<Record<string, (f: Record<string, unknown>) => [RingEventKind, string]>> = {
  ring_created: () => ["created", "Created a new ring"],
  ring_joined: (f) => ["join", `Joined the ring through ${f.through}`],
  ring_merge: (f) => ["merge", `Left its ring to merge into the ring of ${f.through}`],
  range_handed_off: (f) => ["handoff", `Handed off ${f.items} item(s) it no longer holds`],
};

/**
 * This server's own recent ring events, fed by its structured log ({@link NodeEvents.tee}): the
 * ring service and the replication already log joins, merges and hand-offs, so nothing below
 * needs to know the visualizer exists.
 */
export class NodeEvents {
  #events: NodeEvent[] = [];
  #seq = 0;
  readonly #now: () => number;

  /** Creates an empty buffer; `now` gives the event times. */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A log that writes to `log` and records the ring events among its lines here. */
  tee(log: Log): Log {
    return (event, fields = {}) => {
      log(event, fields);
      const describe = LOGGED[event];
      if (describe) {
        const [kind, detail] = describe(fields);
        this.add(kind, detail);
      }
    };
  }

  /** Records an event. */
  add(kind: RingEventKind, detail: string): void {
    this.#events.push({ seq: this.#seq++, at: this.#now(), kind, detail: detail.slice(0, 300) });
    if (this.#events.length > MAX_NODE_EVENTS) this.#events.shift();
  }

  /** The recent events, oldest first. */
  recent(): NodeEvent[] {
    return [...this.#events];
  }
}
