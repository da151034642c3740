/**
 * The server tier at scale (issue #16): a 3-server ring on loopback, 10,000 registered accounts,
 * 5,000 WebSocket sessions held by load-generator processes (this file run with `--worker`),
 * 100 logins per second of churn (an offline account comes in on a random server; once it is
 * in, a random session closes) and a steady relay load between online users on different servers
 * (`relay` bounced back by the recipient's client). The churn is a mix, as real clients
 * reconnect: a user whose earlier session here ended by closing its socket `resume`s it with its
 * access token (what client/session.ts does after a reload or a lost connection), except for
 * `--password-logins` percent of the churn (default 20: new devices, signed-out users), which
 * log in with the password (bcrypt, a durable write of the new session on the ring); users with no
 * session yet always use the password. Measured over the steady phase:
 * - login_p99_ms: `login`/`resume` sent → `session` received, for every churn login, and
 *   password_login_p99_ms / resume_p99_ms for each kind alone;
 * - presence_notice_p99_ms: a churn login's `session` reply → the `presence` (online) notice at
 *   the observer sessions (40, on every server) watching that user, across processes by the
 *   wall clock. Every session watches {@link CONTACTS} contacts (a `watch` list, a fixed
 *   pseudo-random set of accounts per user) and hears only their presence changes. A notice is
 *   expected from each observer that watched the user (its `watch` answered, its socket open)
 *   from before the login was sent until it was answered; presence_notices_seen is the share of
 *   those seen by the end (5 s after the last churn login);
 * - relay_rtt_p50/p99_ms: `relay` A → B → A, A and B on different servers;
 * - server_rss_mb_max: the largest resident set of a server process, sampled every second.
 * Progress on stderr (accounts created, sessions open, per-process CPU); the last stdout line
 * is one JSON object. Every server's stdout and stderr go to `server-<pid>.log` in a temporary
 * directory (printed at the start and the end); a server that exits during the run is reported
 * at once with its exit code or signal and the end of its log, and counted in `servers_died`.
 *
 * Benchmark settings, not production ones: bcrypt cost 4 (`P2P_BENCHMARK_BCRYPT_COST`; cost 10
 * takes ~170 ms a hash on this machine, so 10,000 accounts would take half an hour and 100
 * logins per second would need 17 cores) and the per-address limits raised (every client comes
 * from 127.0.0.1, so the per-address connection and login-failure limits would refuse the load
 * generator; the per-username limits stay). `--bcrypt-cost=10` measures with the production cost.
 *
 * Usage: deno task bench:scale [--accounts=N] [--sessions=N] [--churn=N/s] [--relay=N/s]
 *          [--seconds=N] [--workers=N] [--bcrypt-cost=N] [--ramp-seconds=N]
 *          [--password-logins=PERCENT] [--ramp-concurrency=N] [--cpu-prof-dir=DIR]
 * (--ramp-seconds: how long opening the sessions may take before the steady phase starts with
 * those open; default 300. --ramp-concurrency: logins in flight per load generator while opening
 * the sessions; default 16. --cpu-prof-dir: the servers run with `deno run --cpu-prof` and write
 * their profiles there when the bench stops them.)
 */
import { parseArgs } from "node:util";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import { TEST_ACCOUNT } from "../support/ws_client.ts";

const PASSWORD = "scale-bench-password";
const SERVERS = 3;
const OBSERVERS_PER_WORKER = 20;
const RELAY_PAIRS_PER_WORKER = 50;
/** Contacts each session watches. */
const CONTACTS = 20;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    accounts: { type: "string", default: "10000" },
    sessions: { type: "string", default: "5000" },
    churn: { type: "string", default: "100" },
    relay: { type: "string", default: "200" },
    seconds: { type: "string", default: "60" },
    workers: { type: "string", default: "2" },
    "bcrypt-cost": { type: "string", default: "4" },
    "ramp-seconds": { type: "string", default: "300" },
    "password-logins": { type: "string", default: "20" },
    "ramp-concurrency": { type: "string", default: "16" },
    "cpu-prof-dir": { type: "string" },
    worker: { type: "string" },
    urls: { type: "string" },
  },
});

function whole(name: string, min: number, max: number): number {
  const raw = String(values[name as keyof typeof values]);
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    console.error(`Error: --${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
    Deno.exit(2);
  }
  return n;
}
const accounts = whole("accounts", 10, 1_000_000);
const sessions = whole("sessions", 2, 100_000);
const churn = whole("churn", 0, 10_000);
const relayRate = whole("relay", 0, 100_000);
const seconds = whole("seconds", 5, 3600);
const workers = whole("workers", 1, 16);
const bcryptCost = whole("bcrypt-cost", 4, 15);
const rampSeconds = whole("ramp-seconds", 10, 3600);
const passwordShare = whole("password-logins", 0, 100) / 100;
const rampConcurrency = whole("ramp-concurrency", 1, 1000);
if (sessions > accounts) {
  console.error("Error: --sessions cannot exceed --accounts");
  Deno.exit(2);
}
const perWorkerSessions = Math.floor(sessions / workers);
if (perWorkerSessions < OBSERVERS_PER_WORKER + 2 * RELAY_PAIRS_PER_WORKER + 10) {
  console.error(`Error: each worker needs at least ${OBSERVERS_PER_WORKER + 110} sessions`);
  Deno.exit(2);
}

const userName = (i: number) => `scale${String(i).padStart(6, "0")}`;

/** The {@link CONTACTS} accounts user number `i` watches: a fixed pseudo-random choice. */
function contactsOf(i: number): string[] {
  const out = new Set<string>();
  let x = (i * 2654435761 + 1) >>> 0;
  while (out.size < Math.min(CONTACTS, accounts - 1)) {
    x = (Math.imul(x ^ (x >>> 15), 2246822519) + 0x9e3779b9) >>> 0;
    const j = x % accounts;
    if (j !== i) out.add(userName(j));
  }
  return [...out];
}
const userIndex = (user: string) => Number(user.slice(5));
const epochNow = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}
const round1 = (x: number) => Math.round(x * 10) / 10;

// ---------------------------------------------------------------------------------------------
// Load generator (a child process)
// ---------------------------------------------------------------------------------------------

/** What a worker reports at the end of the steady phase. */
interface WorkerResult {
  type: "result";
  worker: number;
  open: number;
  /** Churn logins: [username, login sent (epoch ms), session received (epoch ms), kind]. */
  logins: [string, number, number, LoginKind][];
  loginFailures: Record<string, number>;
  /** Presence-online notices seen by observers: [observer, username, epoch ms]. */
  presence: [string, string, number][];
  /**
   * When each observer session watched its contacts: [observer, from (its watch answered), to
   * (its socket closed; 0 while open)], epoch ms. Only logins inside such a span expect a notice.
   */
  watching: [string, number, number][];
  relayRtts: number[];
  relaySent: number;
  relayErrors: Record<string, number>;
}

type Role = "observer" | "relay" | "plain";
/** How a churn session comes in: a password login, or a `resume` with the session's token. */
type LoginKind = "password" | "resume";

/** Frames the load generator's sessions received, and how many of them were presence notices. */
const received = { frames: 0, presence: 0 };

/**
 * Every open socket of this load generator: each sends heartbeats from the moment it opens, as
 * client/session.ts does (a login a busy server answers slowly must not cost the connection).
 */
const sockets = new Set<Session>();

class Session {
  ws: WebSocket;
  #next = 1;
  #pending = new Map<number, (frame: Record<string, unknown>) => void>();
  onRelay: (from: string, payload: string) => void = () => {};
  onPresence: (username: string, online: boolean) => void = () => {};
  onError: (code: string) => void = () => {};
  closed = false;
  closedByUs = false;

  constructor(readonly user: string, readonly role: Role, url: string) {
    this.ws = new WebSocket(url.replace(/^http/, "ws") + "/ws");
    sockets.add(this);
    this.ws.onclose = () => {
      sockets.delete(this);
      this.closed = true;
      for (const p of this.#pending.values()) p({ type: "error", code: "closed" });
      this.#pending.clear();
    };
    this.ws.onmessage = (e) => {
      const data = e.data as string;
      received.frames++;
      // Sessions hear the presence changes of their contacts: only observers read them.
      if (data.startsWith('{"v":1,"type":"presence"')) {
        received.presence++;
        if (this.role !== "observer") return;
      } else if (this.role === "plain" && this.#pending.size === 0) return;
      const frame = JSON.parse(data);
      if (typeof frame.reqId === "number") {
        const p = this.#pending.get(frame.reqId);
        this.#pending.delete(frame.reqId);
        if (p) return p(frame);
      }
      if (frame.type === "relay") this.onRelay(frame.from, frame.payload);
      else if (frame.type === "presence") this.onPresence(frame.username, frame.online);
      else if (frame.type === "error") this.onError(frame.code);
    };
  }

  opened(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.ws.onopen = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.ws.onerror = () => {
        clearTimeout(timer);
        resolve(false);
      };
    });
  }

  send(frame: Record<string, unknown>): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ v: 1, ...frame }));
  }

  request(frame: Record<string, unknown>, timeoutMs: number): Promise<Record<string, unknown>> {
    const reqId = this.#next++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(reqId);
        resolve({ type: "error", code: "timeout" });
      }, timeoutMs);
      this.#pending.set(reqId, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      this.send({ ...frame, reqId });
    });
  }

  close(): void {
    sockets.delete(this);
    this.closed = true;
    this.closedByUs = true;
    try {
      this.ws.close();
    } catch { /* closing already */ }
  }
}

async function runWorker(index: number, urls: string[]): Promise<void> {
  const out = (o: unknown) => console.log(JSON.stringify(o));
  const mine: string[] = [];
  for (let i = index; i < accounts; i += workers) mine.push(userName(i));
  const online = new Map<string, Session>();
  const offline = new Set(mine);
  /** The access token of each user's newest session here: what a reconnecting client resumes. */
  const tokens = new Map<string, string>();
  const failures: Record<string, number> = {};
  const fail = (code: string) => failures[code] = (failures[code] ?? 0) + 1;
  let serverTurn = index;

  // What the steady phase measures (observers and relay sessions record only while measuring).
  let measuring = false;
  let ended = false;
  const presence: [string, string, number][] = [];
  const watching: [string, number, number][] = [];
  const relayRtts: number[] = [];
  const relayErrors: Record<string, number> = {};
  const relayInFlight = new Map<string, number>();
  function hook(s: Session): void {
    if (s.role === "observer") {
      s.onPresence = (user, on) => {
        if (on && measuring) presence.push([s.user, user, epochNow()]);
      };
    }
    if (s.role === "relay") {
      s.onRelay = (from, payload) => {
        if (payload.startsWith("p ")) s.send({ type: "relay", to: from, payload: `r${payload}` });
        else if (payload.startsWith("rp ")) {
          const id = payload.slice(3);
          const t = relayInFlight.get(id);
          relayInFlight.delete(id);
          if (t !== undefined && measuring) relayRtts.push(performance.now() - t);
        }
      };
      s.onError = (code) => {
        if (measuring) relayErrors[code] = (relayErrors[code] ?? 0) + 1;
      };
    }
  }

  /** Opens a session for `user` on `url`; resolves with its timing, or undefined on failure. */
  async function login(
    user: string,
    role: Role,
    url: string,
    kind: LoginKind = "password",
  ): Promise<[string, number, number, LoginKind] | undefined> {
    offline.delete(user);
    const s = new Session(user, role, url);
    if (!await s.opened(30_000)) {
      fail("connect");
      s.close();
      offline.add(user);
      return undefined;
    }
    const sent = epochNow();
    const token = tokens.get(user);
    const r = kind === "resume" && token
      ? await s.request({ type: "resume", token }, 60_000)
      : await s.request({ type: "login", username: user, secret: PASSWORD }, 60_000);
    const done = epochNow();
    if (r.type !== "session") {
      fail(`${kind} ${r.code ?? r.type}`);
      // A token refused for good is forgotten: the next time, this user logs in with a password.
      if (kind === "resume" && r.code !== "unavailable" && r.code !== "timeout") {
        tokens.delete(user);
      }
      s.close();
      offline.add(user);
      return undefined;
    }
    if (typeof r.token === "string") tokens.set(user, r.token);
    online.set(user, s);
    hook(s);
    // The session's contacts: their presence changes, and only theirs, reach it from now on.
    const usernames = contactsOf(userIndex(user));
    let span: [string, number, number] | undefined;
    if (role === "observer") {
      s.request({ type: "watch", usernames }, 60_000).then((r) => {
        if (r.type !== "presence_list") return fail(`watch ${r.code ?? r.type}`);
        if (!s.closed) watching.push(span = [user, epochNow(), 0]);
      });
    } else s.send({ type: "watch", reqId: 0, usernames });
    s.ws.addEventListener("close", (e) => {
      if (span) span[2] = epochNow();
      if (!s.closedByUs) fail(`closed by server ${e.code}`);
      if (online.get(user) === s) online.delete(user);
      if (!online.has(user)) offline.add(user);
      // Observers and relay sessions are the measuring instruments: they come back.
      if (role !== "plain" && !s.closedByUs && !ended) {
        (async () => {
          do await sleep(1000); while (!ended && !await login(user, role, url));
        })();
      }
    });
    return [user, sent, done, kind];
  }
  const nextUrl = () => urls[serverTurn++ % urls.length]!;

  // Ramp-up: observers, relay pairs (A on server j, B on server j + 1), then plain sessions.
  const target = perWorkerSessions;
  const plan: { user: string; role: Role; url: string }[] = [];
  let u = 0;
  for (let i = 0; i < OBSERVERS_PER_WORKER; i++) {
    plan.push({ user: mine[u++]!, role: "observer", url: urls[i % urls.length]! });
  }
  const pairs: [string, string][] = [];
  for (let i = 0; i < RELAY_PAIRS_PER_WORKER; i++) {
    const a = mine[u++]!, b = mine[u++]!;
    plan.push({ user: a, role: "relay", url: urls[i % urls.length]! });
    plan.push({ user: b, role: "relay", url: urls[(i + 1) % urls.length]! });
    pairs.push([a, b]);
  }
  const stable = new Set(plan.map((p) => p.user));
  while (plan.length < target) plan.push({ user: mine[u++]!, role: "plain", url: nextUrl() });

  let opened = 0;
  /** How late this process's heartbeat rounds ran, at most (its own event loop or CPU share). */
  const heartbeatLate = { maxMs: 0 };
  const progress = setInterval(
    () => out({ type: "progress", open: online.size, received, failures, heartbeatLate }),
    1000,
  );
  // Sockets silent for PRESENCE_TIMEOUT_MS are dropped: heartbeats from the socket's opening on.
  let lastBeat = performance.now();
  const heartbeats = setInterval(() => {
    const now = performance.now();
    heartbeatLate.maxMs = Math.max(heartbeatLate.maxMs, Math.round(now - lastBeat - 5000));
    lastBeat = now;
    for (const s of sockets) s.send({ type: "heartbeat" });
  }, 5000);
  // "go" on stdin starts the steady phase: after every worker's ramp, or when the ramp took
  // longer than --ramp-seconds (then with the sessions open so far).
  const go = (async () => {
    const reader = Deno.stdin.readable.getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += new TextDecoder().decode(value);
    }
  })();
  let rampStopped = false;
  let cursor = 0;
  // A few logins in flight per load generator: more only queue on the servers (each login is a
  // dozen ring calls) until they time out as `unavailable` on a busy machine.
  const ramp = Promise.all(Array.from({ length: rampConcurrency }, async () => {
    while (cursor < plan.length && !rampStopped) {
      const p = plan[cursor++]!;
      // Stable sessions are retried: the measurements need them.
      for (let tries = 0; tries < (stable.has(p.user) ? 5 : 1) && !rampStopped; tries++) {
        if (await login(p.user, p.role, p.url)) break;
        await sleep(500);
      }
      opened++;
    }
  })).then(() => out({ type: "ready", open: online.size, failures: { ...failures } }));
  await Promise.race([ramp, go]);
  rampStopped = true;
  await go;
  out({ type: "rampFailures", failures: { ...failures } });
  for (const k of Object.keys(failures)) delete failures[k];

  // Steady phase.
  measuring = true;
  const logins: [string, number, number, LoginKind][] = [];
  let relaySent = 0;
  const churnables = () => [...online.values()].filter((s) => s.role === "plain");
  const timers: ReturnType<typeof setInterval>[] = [];
  const pendingLogins: Promise<unknown>[] = [];
  const workerChurn = churn / workers;
  if (workerChurn > 0) {
    // Ticks of 50 ms, each doing its share (timers cannot fire faster reliably).
    let owed = 0;
    timers.push(setInterval(() => {
      owed += workerChurn / 20;
      const offlineList = [...offline];
      // Offline users whose last session here can be resumed (they left by closing the socket).
      const resumable = offlineList.filter((u) => tokens.has(u));
      while (owed >= 1) {
        owed--;
        // A reconnecting client resumes its session; a share of logins are password logins (a
        // new device, or a session that ended), and so are those of users with no session yet.
        const kind: LoginKind = resumable.length && Math.random() >= passwordShare
          ? "resume"
          : "password";
        const pool = kind === "resume" ? resumable : offlineList;
        const coming = pool.splice(Math.floor(Math.random() * pool.length), 1)[0];
        if (coming === undefined) continue;
        if (kind === "resume") offlineList.splice(offlineList.indexOf(coming), 1);
        else if (resumable.includes(coming)) resumable.splice(resumable.indexOf(coming), 1);
        // Each login that succeeds replaces a session (closed then), so the count holds.
        pendingLogins.push(
          login(coming, "plain", nextUrl(), kind).then((r) => {
            if (!r) return;
            logins.push(r);
            const candidates = churnables().filter((s) => s.user !== coming);
            const leaving = candidates[Math.floor(Math.random() * candidates.length)];
            if (leaving) {
              online.delete(leaving.user);
              leaving.close();
            }
          }),
        );
      }
    }, 50));
  }
  const workerRelay = relayRate / workers;
  if (workerRelay > 0) {
    let owed = 0;
    let pair = 0;
    let n = 0;
    timers.push(setInterval(() => {
      owed += workerRelay / 20;
      while (owed >= 1) {
        owed--;
        const [a, b] = pairs[pair++ % pairs.length]!;
        const s = online.get(a);
        if (!s) continue;
        const id = `${index}-${n++}`;
        relayInFlight.set(id, performance.now());
        relaySent++;
        s.send({ type: "relay", to: b, payload: `p ${id}` });
      }
    }, 50));
  }
  await sleep(seconds * 1000);
  for (const t of timers) clearInterval(t);
  await Promise.race([Promise.all(pendingLogins), sleep(10_000)]);
  // Late presence notices (a notice a busy server did not take is sent again after 1 and 2 s)
  // and relay answers still count.
  await sleep(5000);
  measuring = false;
  ended = true;
  relayErrors.unanswered = (relayErrors.unanswered ?? 0) + relayInFlight.size;
  const result: WorkerResult = {
    type: "result",
    worker: index,
    open: online.size,
    logins,
    loginFailures: failures,
    presence,
    watching,
    relayRtts,
    relaySent,
    relayErrors,
  };
  clearInterval(progress);
  clearInterval(heartbeats);
  out(result);
  Deno.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Orchestrator
// ---------------------------------------------------------------------------------------------

/** Resident set size of a process, in MB (0 when it is gone). */
function rssMb(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(status.match(/^VmRSS:\s+(\d+)/m)?.[1] ?? 0);
    return kb / 1024;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a process has used. */
function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** The machine's 1-minute load average (runnable processes; this machine has 2 cores). */
function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** Raises this process's open-file limit (inherited by the servers and workers it starts). */
async function raiseFileLimit(want: number): Promise<number> {
  const limits = Deno.readTextFileSync("/proc/self/limits");
  const soft = Number(limits.match(/^Max open files\s+(\d+)/m)?.[1] ?? 0);
  if (soft >= want) return soft;
  const r = await new Deno.Command("prlimit", {
    args: ["--pid", String(Deno.pid), `--nofile=${want}:${want}`],
    stderr: "piped",
  }).output().catch(() => undefined);
  const after = Number(
    Deno.readTextFileSync("/proc/self/limits").match(/^Max open files\s+(\d+)/m)?.[1] ?? 0,
  );
  if (!r?.success) log(`could not raise the open-file limit to ${want} (it is ${after})`);
  return after;
}

const t0 = Date.now();
function log(msg: string): void {
  console.error(`[bench:scale ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}`);
}

async function main(): Promise<void> {
  const fileLimit = await raiseFileLimit(Math.max(20_000, sessions * 3));
  log(`open-file limit ${fileLimit}`);
  const env = {
    P2P_BENCHMARK_BCRYPT_COST: String(bcryptCost),
    P2P_REGISTRATIONS_PER_MINUTE: "100000",
    P2P_MAX_CONNECTIONS: "1000000",
    P2P_MAX_CONNECTIONS_PER_ADDRESS: "1000000",
    P2P_LOGIN_FAILURES_PER_MINUTE: "10000",
    P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "100000",
  };
  const servers: ServerProcess[] = [];
  const children: Deno.ChildProcess[] = [];
  const logDir = await Deno.makeTempDir({ prefix: "p2pchat-scale-bench-" });
  log(`server output (stdout and stderr) goes to ${logDir}/server-<pid>.log`);
  /** Set once the bench ends the servers itself: an exit before that is a failure. */
  let stopping = false;
  const deaths: string[] = [];
  try {
    log(`starting ${SERVERS} servers (bcrypt cost ${bcryptCost}: a benchmark setting)`);
    const denoFlags = values["cpu-prof-dir"]
      ? ["--cpu-prof", `--cpu-prof-dir=${values["cpu-prof-dir"]}`]
      : [];
    servers.push(...await startCluster(SERVERS, { env, logDir, denoFlags }));
    const urls = servers.map((s) => s.url);
    servers.forEach((s, i) => {
      log(`server${i}: pid ${s.pid}, ${s.url}, log ${s.logPath}`);
      s.exited.then((status) => {
        if (stopping) return;
        const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
        const tail = s.logs().trimEnd().split("\n").slice(-15).join("\n");
        deaths.push(`server${i} (${how})`);
        log(`server${i} (pid ${s.pid}) DIED: ${how}; its log ${s.logPath} ends:\n${tail}`);
      });
    });

    // Accounts: 20 registering connections per server, each one request at a time.
    log(`registering ${accounts} accounts`);
    let created = 0;
    const regFailures: Record<string, number> = {};
    let next = 0;
    const regStart = Date.now();
    const regProgress = setInterval(
      () => log(`accounts created ${created}/${accounts} ${JSON.stringify(regFailures)}`),
      2000,
    );
    await Promise.all(Array.from({ length: 20 * SERVERS }, async (_, c) => {
      // A connection that is not logged in still sends heartbeats (a server closes silent ones);
      // one the server closed anyway is opened again.
      let s: Session | undefined;
      const connect = async () => {
        s?.close();
        s = new Session(`registrar${c}`, "relay", urls[c % SERVERS]!);
        if (!await s.opened(30_000)) throw new Error(`registrar ${c} cannot connect`);
        return s;
      };
      await connect();
      const beat = setInterval(() => s?.send({ type: "heartbeat" }), 5000);
      try {
        while (next < accounts) {
          const username = userName(next++);
          // A retry of the same registration succeeds (same name, same password).
          for (let tries = 0;; tries++) {
            if (s!.ws.readyState !== WebSocket.OPEN) await connect();
            const r = await s!.request(
              { type: "register", username, secret: PASSWORD, ...TEST_ACCOUNT },
              30_000,
            );
            if (r.type === "ok") break;
            const code = String(r.code ?? r.type);
            regFailures[code] = (regFailures[code] ?? 0) + 1;
            if (tries >= 10) throw new Error(`register ${username}: ${JSON.stringify(r)}`);
            await sleep(500);
          }
          created++;
        }
      } finally {
        clearInterval(beat);
        s?.close();
      }
    }));
    clearInterval(regProgress);
    const regMs = Date.now() - regStart;
    if (Object.keys(regFailures).length) {
      log(`registration attempts retried: ${JSON.stringify(regFailures)} (timeout: 30 s)`);
    }
    log(
      `${accounts} accounts in ${(regMs / 1000).toFixed(1)} s (${
        Math.round(accounts / (regMs / 1000))
      }/s)`,
    );

    // Load generators.
    const self = new URL(import.meta.url).pathname;
    const open = new Array<number>(workers).fill(0);
    const workerFailures = new Array<Record<string, number>>(workers).fill({});
    const failureText = () => {
      const sum: Record<string, number> = {};
      for (const f of workerFailures) {
        for (const [k, v] of Object.entries(f)) sum[k] = (sum[k] ?? 0) + v;
      }
      return Object.keys(sum).length ? `; failures ${JSON.stringify(sum)}` : "";
    };
    /** The latest heartbeat round of each load generator, how late at most (ms). */
    const heartbeatLate = new Array<number>(workers).fill(0);
    const frames = new Array<{ frames: number; presence: number }>(workers).fill({
      frames: 0,
      presence: 0,
    });
    const ready: Promise<void>[] = [];
    const results: Promise<WorkerResult>[] = [];
    for (let w = 0; w < workers; w++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          self,
          `--worker=${w}`,
          `--urls=${urls.join(",")}`,
          ...Deno.args.filter((a) =>
            !a.startsWith("--worker") && !a.startsWith("--urls") && !a.startsWith("--cpu-prof")
          ),
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      children.push(child);
      let onReady!: () => void;
      let onResult!: (r: WorkerResult) => void;
      let onEnd!: (e: Error) => void;
      ready.push(
        new Promise((r, j) => {
          onReady = r;
          onEnd = j;
        }),
      );
      results.push(
        new Promise((r, j) => {
          onResult = r;
          const prev = onEnd;
          onEnd = (e) => {
            prev(e);
            j(e);
          };
        }),
      );
      (async () => {
        let buffer = "";
        for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
          buffer += chunk;
          let nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + 1);
            const msg = JSON.parse(line);
            if (msg.type === "progress") {
              open[w] = msg.open;
              heartbeatLate[w] = msg.heartbeatLate.maxMs;
              frames[w] = msg.received;
              workerFailures[w] = msg.failures;
            } else if (msg.type === "rampFailures") {
              if (Object.keys(msg.failures).length) {
                log(`load generator ${w}: failures while opening ${JSON.stringify(msg.failures)}`);
              }
            } else if (msg.type === "ready") {
              open[w] = msg.open;
              onReady();
            } else if (msg.type === "result") onResult(msg);
          }
        }
        onEnd(new Error(`load generator ${w} ended early`));
      })().catch((e) => onEnd(e));
      // An unhandled rejection of a promise nobody awaits yet must not end the bench.
      results.at(-1)!.catch(() => {});
    }
    log(`${workers} load generators open ${sessions} sessions`);
    const rampStart = Date.now();
    const rampProgress = setInterval(() => {
      const cpu = servers.map((s) => cpuSeconds(s.pid).toFixed(0)).join("/");
      const got = frames.reduce((a, f) => a + f.frames, 0);
      const presence = frames.reduce((a, f) => a + f.presence, 0);
      log(
        `sessions open ${
          open.reduce((a, b) => a + b, 0)
        }/${sessions}; server CPU s ${cpu}; frames to clients ${got} (presence ${presence}); load ${loadAverage()}${failureText()}`,
      );
    }, 2000);
    let rampTimer: ReturnType<typeof setTimeout> | undefined;
    const rampComplete = await Promise.race([
      Promise.all(ready).then(() => true),
      new Promise<false>((r) => rampTimer = setTimeout(() => r(false), rampSeconds * 1000)),
    ]);
    clearTimeout(rampTimer);
    clearInterval(rampProgress);
    if (!rampComplete) {
      log(
        `the ramp did not reach ${sessions} sessions in ${rampSeconds} s: measuring with those open`,
      );
    }
    const opened = open.reduce((a, b) => a + b, 0);
    log(`${opened} sessions open in ${((Date.now() - rampStart) / 1000).toFixed(1)} s`);

    // Steady phase.
    const pids = [
      ...servers.map((s, i) => ({ name: `server${i}`, pid: s.pid })),
      ...children.map((c, i) => ({ name: `loadgen${i}`, pid: c.pid })),
    ];
    const cpu0 = pids.map((p) => cpuSeconds(p.pid));
    const frames0 = frames.reduce((a, f) => a + f.frames, 0);
    const presence0 = frames.reduce((a, f) => a + f.presence, 0);
    const loads = [loadAverage()];
    const steadyStart = Date.now();
    let rssMax = 0;
    const sample = () => {
      for (const s of servers) rssMax = Math.max(rssMax, rssMb(s.pid));
    };
    sample();
    const encoder = new TextEncoder();
    for (const c of children) {
      const w = c.stdin.getWriter();
      await w.write(encoder.encode("go\n"));
      w.releaseLock();
    }
    log(
      `steady phase: ${seconds} s, ${churn} logins/s of churn, ${relayRate} relay round trips/s`,
    );
    const steady = setInterval(() => {
      sample();
      loads.push(loadAverage());
      const elapsed = (Date.now() - steadyStart) / 1000;
      const usage = pids.map((p, i) =>
        `${p.name} ${Math.round(((cpuSeconds(p.pid) - cpu0[i]!) / elapsed) * 100)}%`
      );
      const perSecond = Math.round((frames.reduce((a, f) => a + f.frames, 0) - frames0) / elapsed);
      log(
        `${elapsed.toFixed(0)} s: frames to clients ${perSecond}/s; sessions ${
          open.reduce((a, b) => a + b, 0)
        }, server RSS max ${rssMax.toFixed(0)} MB; CPU ${
          usage.join(", ")
        }; load ${loadAverage()}; load generators' heartbeats late by at most ${
          Math.max(...heartbeatLate)
        } ms${failureText()}`,
      );
    }, 2000);
    const all = await Promise.all(results);
    clearInterval(steady);
    sample();
    const elapsed = (Date.now() - steadyStart) / 1000;
    const framesPerS = Math.round((frames.reduce((a, f) => a + f.frames, 0) - frames0) / elapsed);
    const presencePerS = Math.round(
      (frames.reduce((a, f) => a + f.presence, 0) - presence0) / elapsed,
    );
    const cpuShare = Object.fromEntries(
      pids.map((p, i) => [p.name, round1(((cpuSeconds(p.pid) - cpu0[i]!) / elapsed) * 100)]),
    );

    // Merge.
    const loginMsOf = (kind?: LoginKind) =>
      all.flatMap((r) =>
        r.logins.filter((l) => !kind || l[3] === kind).map(([, sent, done]) => done - sent)
      ).sort((a, b) => a - b);
    const loginMs = loginMsOf();
    const passwordMs = loginMsOf("password");
    const resumeMs = loginMsOf("resume");
    // Expected: for each churn login of a user, one notice at each observer watching that user
    // from before the login was sent until after it was answered (an observer the server dropped
    // hears nothing while it logs in again). Each is counted once, at its first notice.
    const loginsByUser = new Map<string, [number, number][]>();
    for (const r of all) {
      for (const [u, sent, done] of r.logins) {
        const list = loginsByUser.get(u) ?? [];
        list.push([sent, done]);
        loginsByUser.set(u, list);
      }
    }
    for (const list of loginsByUser.values()) list.sort((a, b) => a[0] - b[0]);
    const watchersOf = new Map<string, string[]>();
    const spans = new Map<string, [number, number][]>();
    for (const r of all) {
      for (const [o, from, to] of r.watching) {
        if (!spans.has(o)) {
          spans.set(o, []);
          for (const c of contactsOf(userIndex(o))) {
            watchersOf.set(c, [...watchersOf.get(c) ?? [], o]);
          }
        }
        spans.get(o)!.push([from, to || Infinity]);
      }
    }
    const expected = new Set<string>();
    let unwatchedLogins = 0;
    for (const [u, list] of loginsByUser) {
      for (const [sent, done] of list) {
        for (const o of watchersOf.get(u) ?? []) {
          if (spans.get(o)!.some(([from, to]) => from <= sent && to >= done)) {
            expected.add(`${o} ${u} ${sent}`);
          } else unwatchedLogins++;
        }
      }
    }
    const noticeMs: number[] = [];
    let unexpectedNotices = 0;
    for (const r of all) {
      for (const [o, u, seen] of r.presence) {
        const match = loginsByUser.get(u)?.filter(([sent]) => sent <= seen).at(-1);
        const key = match && `${o} ${u} ${match[0]}`;
        if (key && expected.delete(key)) noticeMs.push(Math.max(0, seen - match[1]));
        else unexpectedNotices++;
      }
    }
    noticeMs.sort((a, b) => a - b);
    const expectedNotices = noticeMs.length + expected.size;
    const rtts = all.flatMap((r) => r.relayRtts).sort((a, b) => a - b);
    const failures: Record<string, number> = {};
    const relayErrors: Record<string, number> = {};
    for (const r of all) {
      for (const [k, v] of Object.entries(r.loginFailures)) failures[k] = (failures[k] ?? 0) + v;
      for (const [k, v] of Object.entries(r.relayErrors)) {
        relayErrors[k] = (relayErrors[k] ?? 0) + v;
      }
    }
    const finalSessions = all.reduce((a, r) => a + r.open, 0);
    log(
      `churn logins ${loginMs.length} (${
        round1(loginMs.length / seconds)
      }/s: ${passwordMs.length} with a password, ${resumeMs.length} resumes), failures ${
        JSON.stringify(failures)
      }`,
    );
    log(
      `presence notices ${noticeMs.length} of ${expectedNotices} expected at observers (${unexpectedNotices} other online notices: a repeat, or of a login before the steady phase; ${unwatchedLogins} logins while a watcher was away)`,
    );
    if (expected.size) {
      log(`some notices never seen (observer user login-sent): ${[...expected].slice(0, 5)}`);
    }
    log(
      `relay round trips ${rtts.length} of ${
        all.reduce((a, r) => a + r.relaySent, 0)
      } sent, errors ${JSON.stringify(relayErrors)}`,
    );
    log(`CPU share over the steady phase (100% = one core): ${JSON.stringify(cpuShare)}`);
    log(
      `server logs in ${logDir}${deaths.length ? `; servers that died: ${deaths.join(", ")}` : ""}`,
    );
    log(
      `machine load average over the steady phase: ${
        (loads.reduce((a, b) => a + b, 0) / loads.length).toFixed(1)
      } on ${navigator.hardwareConcurrency} cores (other processes included)`,
    );
    console.log(JSON.stringify({
      sessions: finalSessions,
      server_rss_mb_max: Math.round(rssMax),
      login_p99_ms: round1(percentile(loginMs, 0.99)),
      presence_notice_p99_ms: round1(percentile(noticeMs, 0.99)),
      relay_rtt_p50_ms: round1(percentile(rtts, 0.5)),
      relay_rtt_p99_ms: round1(percentile(rtts, 0.99)),
      login_p50_ms: round1(percentile(loginMs, 0.5)),
      presence_notice_p50_ms: round1(percentile(noticeMs, 0.5)),
      presence_notices_seen: round1(noticeMs.length / Math.max(1, expectedNotices)),
      churn_logins_per_s: round1(loginMs.length / seconds),
      password_logins: passwordMs.length,
      password_login_p50_ms: round1(percentile(passwordMs, 0.5)),
      password_login_p99_ms: round1(percentile(passwordMs, 0.99)),
      resumes: resumeMs.length,
      resume_p50_ms: round1(percentile(resumeMs, 0.5)),
      resume_p99_ms: round1(percentile(resumeMs, 0.99)),
      accounts,
      accounts_per_s: Math.round(accounts / (regMs / 1000)),
      bcrypt_cost: bcryptCost,
      cpu_percent: cpuShare,
      frames_to_clients_per_s: framesPerS,
      presence_frames_per_s: presencePerS,
      machine_load_avg: round1(loads.reduce((a, b) => a + b, 0) / loads.length),
      cores: navigator.hardwareConcurrency,
      servers_died: deaths.length,
      loadgen_heartbeat_late_max_ms: Math.max(...heartbeatLate),
    }));
  } catch (err) {
    log(`failed: ${err instanceof Error ? err.stack : err}; server logs in ${logDir}`);
    throw err;
  } finally {
    stopping = true;
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch { /* ended */ }
      await c.status;
    }
    await Promise.all(servers.map((s) => s.stop()));
  }
}

if (values.worker !== undefined) {
  await runWorker(Number(values.worker), String(values.urls).split(","));
} else {
  await main();
}
