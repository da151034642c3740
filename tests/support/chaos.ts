/**
 * A seeded fault schedule against real server processes while many WebSocket clients write
 * offline messages to one another and fetch + acknowledge their own (issue #16): the engine of
 * `deno task chaos` (scripts/chaos.ts) and of tests/integration/chaos_test.ts.
 *
 * Each user keeps one connection to one server and, while a scenario runs, sends one message at
 * a time to a random other user, retrying the same message id on another server until it is
 * acknowledged; independently it fetches and acknowledges its mailbox about once a second.
 * Per scenario it counts:
 * - sent: distinct messages a client tried to send; acked: those the ring acknowledged;
 * - delivered: distinct messages their recipient fetched (acked or not);
 * - lost: acknowledged but never fetched, after every server is back and the ring is correct;
 * - duplicates: a message fetched again after its recipient's `mail_ack` was answered `ok` (or
 *   twice in one page) — counted in the scenario during which it was seen;
 * - longest write pause: the longest time one message took from its first try to its
 *   acknowledgement, retries and reconnections included.
 * The schedule (which servers, which scenario order, which recipients) comes from the seed;
 * timings of real processes do not.
 */
import { waitForCorrectRing } from "./ring.ts";
import { type ServerProcess, startServer } from "./server_process.ts";
import { waitFor } from "./wait.ts";
import { parseServerFrame, type ServerFrame } from "../../shared/mod.ts";
import { TEST_ACCOUNT } from "./ws_client.ts";

/** The faults a run can schedule. */
export const SCENARIOS = ["kill-k", "kill-k1-restart", "freeze", "rolling", "stale"] as const;
export type ScenarioName = typeof SCENARIOS[number];

/** What each scenario does (for help texts and reports). */
export const SCENARIO_HELP: Record<ScenarioName, string> = {
  "kill-k": "kill -9 of K servers at once; writes go on; then they restart from their disks",
  "kill-k1-restart": "kill -9 of K + 1 servers at once; writes go on; then they restart from disk",
  "freeze": "SIGSTOP of K servers; writes go on; then SIGCONT",
  "rolling": "each server in turn: SIGTERM, restart from its disk, wait for a correct ring",
  "stale": "copy one server's data, run on, kill -9 it and restart it from the old copy",
};

/** Options of {@link runChaos}. */
export interface ChaosOptions {
  seed: number;
  scenarios: readonly ScenarioName[];
  /** Servers in the ring. @default 5 */
  servers?: number;
  /** Replicas beyond the primary (W = K). @default 2 */
  k?: number;
  /** Users, each with one WebSocket connection. @default 30 */
  clients?: number;
  /** How long writes go on before the fault, in ms. @default 3000 */
  calmMs?: number;
  /** How long a fault lasts at least, in ms (and until `faultWrites` writes started). */
  faultMs?: number;
  /** Writes that must start while the fault lasts. @default 2 × clients */
  faultWrites?: number;
  /** Each client's pause between two messages, in ms. @default 250 */
  thinkMs?: number;
  /** Where to keep every server's log, as `<port>.log` (default: nowhere). */
  logDir?: string;
  /** Ends the run early (servers stopped, data removed); the run then rejects. */
  signal?: AbortSignal;
  /** Progress lines (a few per second at most). */
  log?: (line: string) => void;
}

/** The outcome of one scenario. */
export interface ScenarioResult {
  scenario: ScenarioName;
  /** What was done, e.g. "kill -9 :4012 :4013". */
  faults: string[];
  sent: number;
  acked: number;
  delivered: number;
  lost: number;
  duplicates: number;
  longestWritePauseMs: number;
  /** Which write paused longest, how often it was tried, where it was acknowledged. */
  longestWrite: string;
  /** Requests answered with an error code, by code (not failures by themselves). */
  errors: Record<string, number>;
  /** The first lost / duplicate ids, for a report. */
  lostIds: string[];
  duplicateIds: string[];
}

const PASSWORD = "chaos-password-0123";
const CONNECT_MS = 4_000;
const REQUEST_MS = 8_000;
const SERVER_ENV = {
  // Every client connects from 127.0.0.1: the per-address budgets are not what chaos is about.
  P2P_REGISTRATIONS_PER_MINUTE: "100000",
  P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "100000",
  P2P_LOGIN_FAILURES_PER_MINUTE: "10000",
  P2P_MAX_CONNECTIONS_PER_ADDRESS: "10000",
};

/** mulberry32: a small seeded generator, enough for choosing victims and recipients. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` distinct items of `items`, chosen by `random`. */
function pick<T>(items: readonly T[], n: number, random: () => number): T[] {
  const pool = [...items];
  const out: T[] = [];
  while (out.length < n && pool.length) {
    out.push(pool.splice(Math.floor(random() * pool.length), 1)[0]!);
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request without an answer: the connection closed, or no reply came in time. */
class RequestFailed extends Error {
  constructor(message: string, readonly kind: "closed" | "timeout" | "connect" | "login") {
    super(message);
  }
}

/** One client connection: requests matched by reqId, failing on close or after a deadline. */
class Connection {
  #socket: WebSocket;
  #nextReqId = 1;
  #pending = new Map<number, { resolve: (f: ServerFrame) => void; reject: (e: Error) => void }>();
  #heartbeat: ReturnType<typeof setInterval>;
  #closed: Promise<void>;
  open = true;
  /** Called on `mail_waiting`. */
  onMail: () => void = () => {};

  private constructor(socket: WebSocket, readonly url: string) {
    this.#socket = socket;
    this.#closed = new Promise((resolve) =>
      socket.addEventListener("close", () => {
        this.open = false;
        clearInterval(this.#heartbeat);
        for (const p of this.#pending.values()) {
          p.reject(new RequestFailed("connection closed", "closed"));
        }
        this.#pending.clear();
        resolve();
      })
    );
    socket.onmessage = (e) => {
      let frame: ServerFrame;
      try {
        frame = parseServerFrame(e.data);
      } catch {
        return;
      }
      if (frame.type === "mail_waiting") this.onMail();
      if ("reqId" in frame && typeof frame.reqId === "number") {
        const p = this.#pending.get(frame.reqId);
        this.#pending.delete(frame.reqId);
        p?.resolve(frame);
      }
    };
    this.#heartbeat = setInterval(() => this.#send({ type: "heartbeat" }), 5_000);
  }

  static async open(url: string): Promise<Connection> {
    const socket = new WebSocket(url.replace(/^http/, "ws") + "/ws");
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise((resolve, reject) => {
        timer = setTimeout(
          () => reject(new RequestFailed(`connect timeout ${url}`, "connect")),
          CONNECT_MS,
        );
        socket.onopen = resolve;
        socket.onerror = () => reject(new RequestFailed(`cannot connect to ${url}`, "connect"));
        socket.onclose = () =>
          reject(new RequestFailed(`closed while connecting to ${url}`, "connect"));
      });
    } catch (err) {
      clearTimeout(timer);
      socket.onopen = socket.onerror = socket.onclose = null;
      if (socket.readyState !== WebSocket.CLOSED) {
        // A frozen server may accept later; make sure we hear of the close before going on.
        const closed = new Promise((r) => socket.addEventListener("close", r));
        socket.close();
        await Promise.race([closed, sleep(1_000)]);
      }
      throw err;
    }
    clearTimeout(timer);
    socket.onerror = socket.onclose = null;
    return new Connection(socket, url);
  }

  #send(frame: Record<string, unknown>): void {
    if (this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify({ v: 1, ...frame }));
    }
  }

  /** Sends a request; resolves with its reply, rejects on close or after `timeoutMs`. */
  request(frame: Record<string, unknown>, timeoutMs = REQUEST_MS): Promise<ServerFrame> {
    if (!this.open) return Promise.reject(new RequestFailed("connection closed", "closed"));
    const reqId = this.#nextReqId++;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(reqId);
        reject(new RequestFailed(`no reply to ${frame.type} in ${timeoutMs} ms`, "timeout"));
      }, timeoutMs);
      this.#pending.set(reqId, {
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#send({ ...frame, reqId });
    });
  }

  /** Closes the connection; waits for the close (at most a little while: a frozen peer). */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    if (this.#socket.readyState !== WebSocket.CLOSED) {
      try {
        this.#socket.close();
      } catch { /* closing already */ }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#closed, new Promise((r) => timer = setTimeout(r, 3_000))]);
    clearTimeout(timer);
    if (this.open) {
      // The close handshake never finished (frozen server): give up on the socket.
      this.open = false;
      for (const p of this.#pending.values()) {
        p.reject(new RequestFailed("connection closed", "closed"));
      }
      this.#pending.clear();
    }
  }
}

/** One server position: its process (when running), port and data directory. */
interface Slot {
  name: string;
  proc: ServerProcess | undefined;
  port: number;
  dataDir: string;
  frozen: boolean;
}

/** Per-message bookkeeping. */
interface Message {
  id: string;
  from: string;
  to: string;
  scenario: number;
  acked: boolean;
  delivered: boolean;
  /** The recipient's `mail_ack` for it was answered `ok`. */
  receiptAcked: boolean;
  /** Where and when (seconds into the run) its receipt was acknowledged. */
  receiptVia?: string;
  /** Sends tried, and when (seconds into the run) the last one started. */
  attempts: number;
  lastAttemptAt?: string;
}

interface Tally {
  sent: number;
  acked: number;
  duplicates: number;
  duplicateIds: string[];
  longestWritePauseMs: number;
  longestWrite: string;
  errors: Record<string, number>;
}

/** Runs the scenarios in order on one ring; returns one result per scenario. */
export async function runChaos(options: ChaosOptions): Promise<ScenarioResult[]> {
  const random = seededRandom(options.seed);
  const serverCount = options.servers ?? 5;
  const k = options.k ?? 2;
  const clientCount = options.clients ?? 30;
  const calmMs = options.calmMs ?? 3_000;
  const faultMs = options.faultMs ?? 10_000;
  const faultWrites = options.faultWrites ?? 2 * clientCount;
  const thinkMs = options.thinkMs ?? 250;
  const log = options.log ?? (() => {});
  if (k + 2 > serverCount) {
    throw new Error(`chaos needs at least K + 2 = ${k + 2} servers (K + 1 are killed at once)`);
  }
  const env = { ...SERVER_ENV, P2P_REPLICAS: String(k), P2P_WRITE_QUORUM: String(k) };

  const slots: Slot[] = [];
  const users: string[] = Array.from(
    { length: clientCount },
    (_, i) => `chaos${String(i).padStart(3, "0")}`,
  );
  const messages = new Map<string, Message>();
  const tallies: Tally[] = options.scenarios.map(() => ({
    sent: 0,
    acked: 0,
    duplicates: 0,
    duplicateIds: [],
    longestWritePauseMs: 0,
    longestWrite: "",
    errors: {},
  }));
  let current = 0;
  let writesStarted = 0;
  let writing = false;
  let running = true;
  const connections = new Map<string, Connection>();
  const tmpDirs: string[] = [];

  const began = Date.now();
  const elapsed = () => ((Date.now() - began) / 1000).toFixed(1);
  const nameOf = (url: string) => `:${new URL(url).port}`;
  const urls = () => slots.filter((s) => s.proc).map((s) => s.proc!.url);
  const error = (code: string) => {
    const t = tallies[current]!;
    t.errors[code] = (t.errors[code] ?? 0) + 1;
  };

  /** Appends a server process's log (JSON lines) to `<logDir>/<port>.log`. */
  async function saveLogs(slot: Slot): Promise<void> {
    if (!options.logDir || !slot.proc) return;
    await Deno.mkdir(options.logDir, { recursive: true });
    await Deno.writeTextFile(`${options.logDir}/${slot.port}.log`, slot.proc.logs(), {
      append: true,
    });
  }

  async function start(slot: Slot, dataDir: string): Promise<void> {
    const peers = slots.filter((s) => s !== slot && s.proc && !s.frozen).map((s) => s.proc!.url);
    slot.proc = await startServer({ env, port: slot.port, dataDir, peers });
    slot.dataDir = dataDir;
    slot.port = Number(new URL(slot.proc.url).port);
    slot.name = `:${slot.port}`;
  }

  async function ringSettled(what: string): Promise<void> {
    const procs = slots.map((s) => s.proc!);
    await waitFor(
      `${what}: every server to see all ${serverCount}`,
      async () => {
        for (const p of procs) {
          const h = await (await fetch(`${p.url}/healthz`)).json();
          if (h.servers.length !== serverCount) return false;
        }
        return true;
      },
      90_000,
      200,
    );
    await waitForCorrectRing(procs, `${what}: one correct ring`, 90_000);
  }

  const connecting = new Map<string, Promise<Connection>>();
  /** The user's open connection, opening and logging in on a random running server if needed. */
  function connection(user: string): Promise<Connection> {
    const have = connections.get(user);
    if (have?.open) return Promise.resolve(have);
    connections.delete(user);
    // One login at a time per user: a second one would supersede the first.
    let pending = connecting.get(user);
    if (!pending) {
      pending = connect(user).finally(() => connecting.delete(user));
      connecting.set(user, pending);
    }
    return pending;
  }

  async function connect(user: string): Promise<Connection> {
    const candidates = urls();
    const first = Math.floor(Math.random() * candidates.length);
    let last: unknown;
    for (let i = 0; i < candidates.length; i++) {
      const url = candidates[(first + i) % candidates.length]!;
      let conn: Connection | undefined;
      try {
        conn = await Connection.open(url);
        const r = await conn.request({ type: "login", username: user, secret: PASSWORD });
        if (r.type !== "session") {
          if (r.type === "error") error(`login ${r.code}`);
          throw new RequestFailed(`login: ${JSON.stringify(r)}`, "login");
        }
        conn.onMail = () => wake(user);
        connections.set(user, conn);
        return conn;
      } catch (err) {
        last = err;
        await conn?.close();
      }
    }
    throw new RequestFailed(`no server took ${user}'s login: ${last}`, "login");
  }

  async function dropConnection(user: string, conn: Connection | undefined): Promise<void> {
    if (conn && connections.get(user) === conn) connections.delete(user);
    await conn?.close();
  }

  // --- writers -------------------------------------------------------------------------------
  let seq = 0;
  async function writer(user: string, pickTo: () => string): Promise<void> {
    while (writing) {
      const to = pickTo();
      const scenario = current;
      const id = `s${scenario}-${user}-${String(seq++).padStart(6, "0")}`;
      const message: Message = {
        id,
        from: user,
        to,
        scenario,
        acked: false,
        delivered: false,
        receiptAcked: false,
        attempts: 0,
      };
      messages.set(id, message);
      tallies[scenario]!.sent++;
      writesStarted++;
      const started = performance.now();
      const sentAt = Date.now();
      for (let attempt = 0; attempt < 8 && !message.acked; attempt++) {
        let conn: Connection | undefined;
        try {
          conn = await connection(user);
          message.attempts++;
          message.lastAttemptAt = `${elapsed()} s via ${nameOf(conn.url)}`;
          const r = await conn.request({
            type: "mail_send",
            to,
            messages: [{ id, sentAt, envelope: `sealed:${id}` }],
          });
          if (r.type === "ok") {
            message.acked = true;
            tallies[scenario]!.acked++;
            const ms = Math.round(performance.now() - started);
            const t = tallies[current]!;
            if (ms > t.longestWritePauseMs) {
              t.longestWritePauseMs = ms;
              t.longestWrite = `${id}: ${message.attempts} tries, acked at ${elapsed()} s via ${
                nameOf(conn.url)
              }`;
            }
          } else {
            error(r.type === "error" ? r.code : r.type);
            await sleep(300);
          }
        } catch (err) {
          error(err instanceof RequestFailed ? err.kind : "client error");
          await dropConnection(user, conn);
          await sleep(200);
        }
      }
      await sleep(thinkMs * (0.5 + Math.random()));
    }
  }

  // --- fetchers ------------------------------------------------------------------------------
  const wakers = new Map<string, () => void>();
  const wake = (user: string) => wakers.get(user)?.();
  let fetchRounds = 0;

  /** Fetches every page of `user`'s mailbox and acknowledges it; true when it got through. */
  async function fetchOnce(user: string): Promise<boolean> {
    let conn: Connection | undefined;
    try {
      conn = await connection(user);
      let after: string | undefined;
      const seenNow = new Set<string>();
      while (true) {
        const r = await conn.request({ type: "mail_fetch", ...(after ? { after } : {}) });
        if (r.type !== "mail") {
          error(r.type === "error" ? `fetch ${r.code}` : r.type);
          return false;
        }
        for (const m of r.messages) {
          const known = messages.get(m.id);
          const t = tallies[current]!;
          if (!known || known.to !== user || m.from !== known.from) {
            t.duplicates++;
            t.duplicateIds.push(`${m.id} (unexpected for ${user} from ${m.from})`);
            continue;
          }
          if (known.receiptAcked || seenNow.has(m.id)) {
            t.duplicates++;
            const what = `${m.id} (sent ${known.attempts}×, last at ${known.lastAttemptAt}; ` +
              `receipt acked via ${known.receiptVia ?? "-"}; fetched again via ${
                nameOf(conn.url)
              } at ${elapsed()} s during "${phase}")`;
            // Said at once too: a run that never ends (a ring that does not heal) still shows it.
            log(`DUPLICATE ${what}`);
            if (t.duplicateIds.length < 20) t.duplicateIds.push(what);
          }
          seenNow.add(m.id);
          known.delivered = true;
        }
        if (r.messages.length) {
          const ack = await conn.request({
            type: "mail_ack",
            messages: r.messages.map((m) => ({ id: m.id, from: m.from })),
          });
          if (ack.type !== "ok") {
            error(ack.type === "error" ? `ack ${ack.code}` : ack.type);
            return false;
          }
          for (const m of r.messages) {
            const known = messages.get(m.id);
            if (known && !known.receiptAcked) {
              known.receiptAcked = true;
              known.receiptVia = `${nameOf(conn.url)} at ${elapsed()} s`;
            }
          }
        }
        if (!r.more) return true;
        after = r.messages.at(-1)?.id;
      }
    } catch (err) {
      error(err instanceof RequestFailed ? `fetch ${err.kind}` : "client error");
      await dropConnection(user, conn);
      return false;
    }
  }

  async function fetcher(user: string): Promise<void> {
    while (running) {
      await fetchOnce(user);
      fetchRounds++;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 700 + Math.random() * 600);
        function done() {
          clearTimeout(timer);
          wakers.delete(user);
          resolve();
        }
        wakers.set(user, done);
      });
    }
  }

  // --- progress ------------------------------------------------------------------------------
  let phase = "starting";
  const progress = setInterval(() => {
    const t = tallies[current];
    if (!t) return;
    const delivered = [...messages.values()].filter((m) => m.scenario === current && m.delivered)
      .length;
    const up = slots.filter((s) => s.proc && !s.frozen).length;
    log(
      `${
        options.scenarios[current]
      } | ${phase} | servers up ${up}/${serverCount} | sent ${t.sent} acked ${t.acked} delivered ${delivered} dup ${t.duplicates} | longest pause ${t.longestWritePauseMs} ms`,
    );
  }, 2_000);

  let writers: Promise<void>[] = [];
  function startWriting(): void {
    writing = true;
    writers = users.map((u) => {
      const others = users.filter((o) => o !== u);
      return writer(u, () => others[Math.floor(Math.random() * others.length)]!);
    });
  }
  async function stopWriting(): Promise<void> {
    writing = false;
    await Promise.all(writers);
  }

  /** Waits until `faultMs` passed and `faultWrites` writes started since the call. */
  async function underFault(): Promise<void> {
    const since = writesStarted;
    const until = Date.now() + faultMs;
    await waitFor(
      "writes during the fault",
      () => writesStarted - since >= faultWrites && Date.now() >= until,
      faultMs + 120_000,
      100,
    );
  }

  const results: ScenarioResult[] = [];
  let fetchers: Promise<void>[] = [];
  // Aborting (Ctrl-C in scripts/chaos.ts) ends the run through the cleanup below.
  let abortListener: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    abortListener = () => reject(new Error("chaos run aborted"));
    options.signal?.addEventListener("abort", abortListener);
  });
  aborted.catch(() => {});
  try {
    return await Promise.race([aborted, run()]);
  } finally {
    if (abortListener) options.signal?.removeEventListener("abort", abortListener);
    writing = false;
    running = false;
    clearInterval(progress);
    for (const s of slots) {
      if (s.proc && s.frozen) Deno.kill(s.proc.pid, "SIGCONT");
    }
    if (options.signal?.aborted) {
      // The run goes on in the background for a moment: do not wait for its clients.
      await Promise.all(slots.map((s) => s.proc?.stop("SIGKILL")));
    }
    await Promise.all(writers);
    for (const w of wakers.values()) w();
    await Promise.all([...connections.values()].map((c) => c.close()));
    await Promise.all(fetchers);
    await Promise.all([...connections.values()].map((c) => c.close()));
    await Promise.all(slots.map((s) => s.proc?.stop()));
    for (const s of slots) await saveLogs(s).catch(() => {});
    for (const d of tmpDirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }

  async function run(): Promise<ScenarioResult[]> {
    log(`seed ${options.seed}: starting ${serverCount} servers (K = ${k}, W = ${k})`);
    for (let i = 0; i < serverCount; i++) {
      const slot: Slot = { name: "", proc: undefined, port: 0, dataDir: "", frozen: false };
      slots.push(slot);
    }
    await start(slots[0]!, await Deno.makeTempDir({ prefix: "p2pchat-chaos-" }));
    await Promise.all(
      slots.slice(1).map(async (s) =>
        start(s, await Deno.makeTempDir({ prefix: "p2pchat-chaos-" }))
      ),
    );
    tmpDirs.push(...slots.map((s) => s.dataDir));
    await ringSettled("start");
    log(`registering ${clientCount} users`);
    const registrar = await Connection.open(slots[0]!.proc!.url);
    try {
      await Promise.all(users.map(async (u, i) => {
        await sleep(i * 20);
        // A busy ring may answer `unavailable`: the same registration, retried, succeeds.
        for (let tries = 1;; tries++) {
          const r = await registrar.request(
            { type: "register", username: u, secret: PASSWORD, ...TEST_ACCOUNT },
            60_000,
          );
          if (r.type === "ok") break;
          if (tries >= 10 || r.type !== "error" || r.code !== "unavailable") {
            throw new Error(`register ${u}: ${JSON.stringify(r)}`);
          }
          await sleep(1_000);
        }
      }));
    } finally {
      await registrar.close();
    }
    fetchers = users.map((u) => fetcher(u));
    phase = "logging in";
    await waitFor(
      "every client to log in",
      () => users.every((u) => connections.get(u)?.open),
      120_000,
      100,
    );

    for (let s = 0; s < options.scenarios.length; s++) {
      current = s;
      const name = options.scenarios[s]!;
      const faults: string[] = [];
      phase = "calm";
      log(`scenario ${s + 1}/${options.scenarios.length} ${name}: ${SCENARIO_HELP[name]}`);
      startWriting();
      const calmUntil = Date.now() + calmMs;
      await waitFor(
        "writes acknowledged before the fault",
        () => Date.now() >= calmUntil && tallies[s]!.acked >= clientCount,
        calmMs + 120_000,
        100,
      );
      const up = slots.filter((x) => x.proc);
      switch (name) {
        case "kill-k":
        case "kill-k1-restart": {
          const victims = pick(up, name === "kill-k" ? k : k + 1, random);
          faults.push(`kill -9 ${victims.map((v) => v.name).join(" ")} at ${elapsed()} s`);
          phase = faults.at(-1)!;
          log(phase);
          await Promise.all(victims.map(async (v) => {
            await v.proc!.stop("SIGKILL");
            await saveLogs(v);
            v.proc = undefined;
          }));
          await underFault();
          phase = `restart ${victims.map((v) => v.name).join(" ")} from disk`;
          log(phase);
          for (const v of victims) await start(v, v.dataDir);
          faults.push(phase);
          break;
        }
        case "freeze": {
          const victims = pick(up, k, random);
          phase = `SIGSTOP ${victims.map((v) => v.name).join(" ")}`;
          faults.push(`${phase} at ${elapsed()} s`);
          log(phase);
          for (const v of victims) {
            Deno.kill(v.proc!.pid, "SIGSTOP");
            v.frozen = true;
          }
          await underFault();
          phase = `SIGCONT ${victims.map((v) => v.name).join(" ")}`;
          faults.push(`${phase} at ${elapsed()} s`);
          log(phase);
          for (const v of victims) {
            Deno.kill(v.proc!.pid, "SIGCONT");
            v.frozen = false;
          }
          break;
        }
        case "rolling": {
          for (const v of pick(up, up.length, random)) {
            phase = `rolling: SIGTERM ${v.name}, restart from disk`;
            faults.push(`restart ${v.name} at ${elapsed()} s`);
            log(phase);
            await v.proc!.stop("SIGTERM");
            await saveLogs(v);
            v.proc = undefined;
            await start(v, v.dataDir);
            await ringSettled(`after restarting ${v.name}`);
          }
          break;
        }
        case "stale": {
          const [v] = pick(up, 1, random);
          const copy = await Deno.makeTempDir({ prefix: "p2pchat-chaos-stale-" });
          tmpDirs.push(copy);
          // Frozen while copied: the database and its write-ahead log are one consistent state.
          Deno.kill(v!.proc!.pid, "SIGSTOP");
          try {
            for await (const e of Deno.readDir(v!.dataDir)) {
              if (e.isFile) await Deno.copyFile(`${v!.dataDir}/${e.name}`, `${copy}/${e.name}`);
            }
          } finally {
            Deno.kill(v!.proc!.pid, "SIGCONT");
          }
          phase = `copied ${v!.name}'s data; running on`;
          faults.push(`copy data of ${v!.name}`);
          log(phase);
          await underFault();
          phase = `kill -9 ${v!.name}, restart it from the old copy`;
          faults.push(phase);
          log(phase);
          await v!.proc!.stop("SIGKILL");
          await saveLogs(v!);
          v!.proc = undefined;
          await start(v!, copy);
          break;
        }
      }
      phase = "recovering";
      await ringSettled(`after ${name}`);
      // Writes go on a little on the healed ring (a stale or restarted node now serves).
      const since = writesStarted;
      await waitFor(
        "writes on the healed ring",
        () => writesStarted - since >= clientCount,
        60_000,
      );
      await stopWriting();
      phase = "draining";
      log(`${name}: writes stopped; waiting until every acknowledged message is fetched`);
      const mine = () => [...messages.values()].filter((m) => m.scenario === s);
      try {
        await waitFor(
          "every acknowledged message to be fetched",
          () => mine().every((m) => !m.acked || m.delivered),
          60_000,
          200,
        );
      } catch { /* what is missing is counted as lost below */ }
      // A few more fetch rounds by everyone: late copies would show up as duplicates here.
      const rounds = fetchRounds;
      await waitFor("three more fetch rounds", () => fetchRounds >= rounds + 3 * clientCount);
      const t = tallies[s]!;
      const lost = mine().filter((m) => m.acked && !m.delivered);
      results.push({
        scenario: name,
        faults,
        sent: t.sent,
        acked: t.acked,
        delivered: mine().filter((m) => m.delivered).length,
        lost: lost.length,
        duplicates: t.duplicates,
        longestWritePauseMs: t.longestWritePauseMs,
        longestWrite: t.longestWrite,
        errors: t.errors,
        lostIds: lost.slice(0, 20).map((m) => `${m.id} → ${m.to}`),
        duplicateIds: t.duplicateIds,
      });
      const r = results.at(-1)!;
      log(
        `${name} done: sent ${r.sent} acked ${r.acked} delivered ${r.delivered} lost ${r.lost} duplicates ${r.duplicates} longest write pause ${r.longestWritePauseMs} ms`,
      );
    }
    return results;
  }
}

/** The per-scenario table `deno task chaos` prints. */
export function formatResults(results: ScenarioResult[]): string {
  const head = ["scenario", "sent", "acked", "delivered", "lost", "duplicates", "longest pause ms"];
  const rows = results.map((r) => [
    r.scenario,
    String(r.sent),
    String(r.acked),
    String(r.delivered),
    String(r.lost),
    String(r.duplicates),
    String(r.longestWritePauseMs),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join("  ");
  return [line(head), ...rows.map(line)].join("\n");
}
