import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { Session, type SocketLike, type TabStorage, type Timers, webSocketUrl } from "./session.ts";
import { countedTimers } from "./testing/timers.ts";
import { ManualClock } from "../shared/clock.ts";
import type { ClientFrame, ServerFrame } from "../shared/mod.ts";

/** A socket whose server side is a function of the frames it receives. */
class FakeSocket implements SocketLike {
  readyState = 0;
  onopen: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  sent: ClientFrame[] = [];
  /** Whether the close event has reached the session. */
  isCloseDelivered = false;

  constructor(readonly url: string, readonly server: FakeServer | null) {
    setTimeout(() => {
      if (this.server?.isFrozen) return; // the connection is accepted, the upgrade never answered
      if (this.server?.isUp) {
        this.readyState = 1;
        this.onopen?.(new Event("open"));
      } else this.close();
    }, 0);
  }

  send(text: string): void {
    const frame = JSON.parse(text) as ClientFrame;
    this.sent.push(frame);
    const reply = this.server?.isFrozen ? null : this.server?.answer(frame);
    if (reply) setTimeout(() => this.push(reply), 0);
  }

  push(frame: ServerFrame): void {
    this.onmessage?.(new MessageEvent("message", { data: JSON.stringify(frame) }));
  }

  close(code?: number): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => {
      this.isCloseDelivered = true;
      this.onclose?.(new CloseEvent("close", { code }));
    }, 0);
  }
}

/** One server of the fake cluster. */
class FakeServer {
  isUp = true;
  /** Stopped (SIGSTOP): sockets stay open, nothing is answered or opened. */
  isFrozen = false;
  sockets: FakeSocket[] = [];
  supersedeOnWatch = false;
  supersedeCloseCode = 4001;
  /** When set, sessions last this long and come with a refresh token (rotated by `refresh`). */
  accessTtlMs: number | null = null;
  /** Refreshes so far, shared by the cluster's servers (as the ring shares them). */
  shared = { refreshes: 0 };
  /** Answers `resume` with `unavailable` (the servers holding the account are down). */
  isAccountUnavailable = false;
  constructor(readonly base: string, readonly tokens: Set<string>, readonly all: string[]) {}

  answer(f: ClientFrame): ServerFrame | null {
    const session = (reqId: number, token = `token-0123456789-${this.base.slice(-4)}`) => {
      this.tokens.add(token);
      const frame: ServerFrame = {
        v: 1,
        type: "session",
        reqId,
        username: "alice",
        token,
        expiresAt: this.accessTtlMs === null ? 1e13 : Date.now() + this.accessTtlMs,
        servers: this.all,
      };
      if (this.accessTtlMs !== null) {
        frame.refreshToken = `refresh-0123456789-${this.shared.refreshes}`;
      }
      return frame;
    };
    switch (f.type) {
      case "login":
        return f.secret === "password-1" ? session(f.reqId) : {
          v: 1,
          type: "error",
          reqId: f.reqId,
          code: "wrong_credentials",
          message: "Wrong username or password",
        };
      case "login_params":
        return {
          v: 1,
          type: "login_params",
          reqId: f.reqId,
          username: f.username,
          salt: "A".repeat(22),
        };
      case "refresh":
        if (f.refreshToken !== `refresh-0123456789-${this.shared.refreshes}`) {
          return {
            v: 1,
            type: "error",
            reqId: f.reqId,
            code: "not_authenticated",
            message: "This refresh token was already used or replaced: please log in again",
          };
        }
        this.shared.refreshes++;
        return session(f.reqId, `token-0123456789-refreshed-${this.shared.refreshes}`);
      case "resume":
        if (this.isAccountUnavailable) {
          return {
            v: 1,
            type: "error",
            reqId: f.reqId,
            code: "unavailable",
            message: "The servers holding this account are unreachable: try again shortly",
          };
        }
        return this.tokens.has(f.token) ? session(f.reqId, f.token) : {
          v: 1,
          type: "error",
          reqId: f.reqId,
          code: "session_expired",
          message: "Session expired: please log in again",
        };
      case "ping":
        return { v: 1, type: "pong", reqId: f.reqId };
      case "mail_send":
        return f.to === "nobody"
          ? {
            v: 1,
            type: "error",
            reqId: f.reqId,
            code: "unknown_user",
            message: 'No user named "nobody": check the name',
          }
          : { v: 1, type: "ok", reqId: f.reqId };
      case "mail_fetch":
        return {
          v: 1,
          type: "mail",
          reqId: f.reqId,
          messages: [{ id: "message-0001", from: "bob", sentAt: 5, envelope: "sealed" }],
        };
      case "mail_ack": {
        const sock = this.sockets.at(-1)!;
        setTimeout(
          () =>
            sock.push({ v: 1, type: "delivered", by: "carol", ids: f.messages.map((m) => m.id) }),
          0,
        );
        return { v: 1, type: "ok", reqId: f.reqId };
      }
      case "watch":
        if (this.supersedeOnWatch) {
          const sock = this.sockets.at(-1)!;
          setTimeout(() => {
            sock.push({ v: 1, type: "superseded", message: "Signed in elsewhere" });
            sock.close(this.supersedeCloseCode);
          }, 0);
        }
        return null;
      default:
        return null;
    }
  }
}

function memoryStorage(): TabStorage & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

function cluster(n: number) {
  const tokens = new Set<string>();
  const bases = Array.from({ length: n }, (_, i) => `http://127.0.0.1:${9001 + i}`);
  const servers = new Map(bases.map((b) => [webSocketUrl(b), new FakeServer(b, tokens, bases)]));
  const shared = { refreshes: 0 };
  for (const srv of servers.values()) srv.shared = shared;
  const openSocket = (url: string) => {
    const server = servers.get(url) ?? null;
    const socket = new FakeSocket(url, server);
    server?.sockets.push(socket);
    return socket;
  };
  return { bases, servers: [...servers.values()], openSocket };
}

const fast = { reconnectMinMs: 5, reconnectMaxMs: 20, heartbeatIntervalMs: 1_000_000 };

/** A session whose home server is the cluster's first, with fast timings. */
function sessionOn(
  c: ReturnType<typeof cluster>,
  storage: ReturnType<typeof memoryStorage>,
  timers?: Timers,
) {
  return new Session(
    { openSocket: c.openSocket, storage, ...(timers ? { timers } : {}) },
    { homeServer: c.bases[0]!, ...fast },
  );
}

/**
 * Asserts that `s` will not connect again: every socket's close has reached it, and it has no
 * timer left that could reconnect (the reconnect delay is a session timer).
 */
async function assertStaysClosed(
  c: ReturnType<typeof cluster>,
  timers: ReturnType<typeof countedTimers>,
): Promise<void> {
  const sockets = () => c.servers.flatMap((srv) => srv.sockets);
  await waitFor(() => sockets().every((sock) => sock.isCloseDelivered), "every close delivered");
  assertEquals(timers.pending.size, 0, "no reconnect timer pending");
  assertEquals(sockets().length, 1, "no reconnect to any server");
}

Deno.test("webSocketUrl maps a server's base URL to its /ws endpoint", () => {
  assertEquals(webSocketUrl("http://127.0.0.1:8001"), "ws://127.0.0.1:8001/ws");
  assertEquals(webSocketUrl("https://chat.example/app/"), "wss://chat.example/app/ws");
});

Deno.test("login stores the token in tab storage and errors carry the server's message", async () => {
  const c = cluster(1);
  const storage = memoryStorage();
  const s = sessionOn(c, storage);
  try {
    const err = await s.login("alice", "nope-nope").catch((e) => e as Error);
    assertEquals(err instanceof Error ? err.message : "", "Wrong username or password");
    assertEquals(await s.loginParams("alice"), "A".repeat(22), "the salt, before login");
    const info = await s.login("alice", "password-1");
    assertEquals(s.status, "online");
    assert(storage.data.get("p2pchat.session")?.includes(info.token));
    assert((await s.ping()) >= 0);
  } finally {
    s.stop();
  }
});

Deno.test("when the home server dies the session resumes on another server", async () => {
  const c = cluster(3);
  const storage = memoryStorage();
  const s = sessionOn(c, storage);
  let resumed = 0;
  s.events.onResumed = () => resumed++;
  try {
    await s.login("alice", "password-1");
    const home = c.servers[0]!;
    home.isUp = false;
    home.sockets.forEach((sock) => sock.close());
    await waitFor(() => resumed === 1 && s.status === "online", "resumed elsewhere");
    assert(s.currentServer !== c.bases[0], `still on ${s.currentServer}`);
  } finally {
    s.stop();
  }
});

Deno.test("after a reload the stored session resumes by itself", async () => {
  const c = cluster(2);
  const storage = memoryStorage();
  const first = sessionOn(c, storage);
  await first.login("alice", "password-1");
  first.stop();
  // The home server is gone too: the stored server list lets the new page fail over.
  c.servers[0]!.isUp = false;
  const again = sessionOn(c, storage);
  const resumed: string[] = [];
  again.events.onResumed = (info) => resumed.push(info.username);
  try {
    assertEquals(again.storedSession()?.username, "alice");
    again.start();
    await waitFor(() => resumed.length === 1, "resume");
    assertEquals(resumed, ["alice"]);
  } finally {
    again.stop();
  }
});

Deno.test("a refused token ends the session and clears tab storage", async () => {
  const c = cluster(1);
  const storage = memoryStorage();
  storage.setItem(
    "p2pchat.session",
    JSON.stringify({
      username: "alice",
      token: "stale-token-0123456789",
      expiresAt: 0,
      servers: [],
    }),
  );
  const s = sessionOn(c, storage);
  let lost = "";
  s.events.onSessionLost = (reason) => lost = reason;
  try {
    s.start();
    await waitFor(() => lost !== "", "session lost");
    assertEquals(lost, "Session expired: please log in again");
    assertEquals(storage.data.has("p2pchat.session"), false);
  } finally {
    s.stop();
  }
});

Deno.test("resume answered 'unavailable' keeps the session, retries on every server, then resumes", async () => {
  const c = cluster(2);
  const storage = memoryStorage();
  const token = "known-token-0123456789";
  c.servers[0]!.tokens.add(token);
  storage.setItem(
    "p2pchat.session",
    JSON.stringify({ username: "alice", token, expiresAt: 1e13, servers: c.bases }),
  );
  for (const srv of c.servers) srv.isAccountUnavailable = true;
  const s = sessionOn(c, storage);
  const told: string[] = [];
  let lost = false;
  let resumed = 0;
  s.events.onResumeUnavailable = (message) => told.push(message);
  s.events.onSessionLost = () => lost = true;
  s.events.onResumed = () => resumed++;
  try {
    s.start();
    await waitFor(() => told.length >= 6, "six unavailable answers");
    assertEquals(lost, false);
    assert(storage.data.get("p2pchat.session")?.includes(token), "the token is kept");
    assert(c.servers.every((srv) => srv.sockets.length >= 2), "both servers were tried");
    for (const srv of c.servers) srv.isAccountUnavailable = false;
    await waitFor(() => resumed === 1, "resumed once the account is reachable");
    assertEquals(s.status, "online");
    assertEquals(lost, false);
  } finally {
    s.stop();
  }
});

Deno.test("superseded: the session forgets its token and stops without reconnecting", async () => {
  const c = cluster(2);
  const storage = memoryStorage();
  const timers = countedTimers();
  const s = sessionOn(c, storage, timers);
  const told: string[] = [];
  s.events.onSuperseded = (message) => told.push(message);
  try {
    await s.login("alice", "password-1");
    c.servers[0]!.supersedeOnWatch = true;
    void s.watch(["bob"]).catch(() => {});
    await waitFor(() => told.length === 1, "superseded");
    assertEquals(told, ["Signed in elsewhere"]);
    assertEquals(s.status, "offline");
    assertEquals(storage.data.has("p2pchat.session"), false);
    await assertStaysClosed(c, timers);
  } finally {
    s.stop();
  }
});

Deno.test("superseded: the close code alone also stops the session", async () => {
  const c = cluster(1);
  const storage = memoryStorage();
  const timers = countedTimers();
  const s = sessionOn(c, storage, timers);
  const told: string[] = [];
  s.events.onSuperseded = (message) => told.push(message);
  try {
    await s.login("alice", "password-1");
    c.servers[0]!.sockets[0]!.close(4001);
    await waitFor(() => told.length === 1, "superseded by close code");
    assertEquals(s.status, "offline");
    await assertStaysClosed(c, timers);
  } finally {
    s.stop();
  }
});

Deno.test("mailbox requests: send, fetch, ack, errors with the server's message, delivered", async () => {
  const c = cluster(1);
  const s = new Session({ openSocket: c.openSocket, storage: memoryStorage() }, {
    homeServer: c.bases[0]!,
    ...fast,
  });
  try {
    await s.login("alice", "password-1");
    await s.mailSend("bob", [{ id: "message-0002", sentAt: 1, envelope: "x" }]);
    const err = await s.mailSend("nobody", [{ id: "message-0003", sentAt: 1, envelope: "x" }])
      .catch((e) => e as Error);
    assertEquals(err instanceof Error ? err.message : "", 'No user named "nobody": check the name');
    assertEquals(await s.mailFetch(), [
      { id: "message-0001", sentAt: 5, envelope: "sealed", from: "bob" },
    ]);
    const delivered: Array<[string, string[]]> = [];
    s.events.onDelivered = (by, ids) => delivered.push([by, ids]);
    await s.mailAck([{ id: "message-0001", from: "bob" }]);
    await waitFor(() => delivered.length === 1, "delivered pushed");
    assertEquals(delivered, [["carol", ["message-0001"]]]);
    const sent = c.servers[0]!.sockets.at(-1)!.sent.map((f) => f.type);
    assertEquals(sent.filter((t) => t.startsWith("mail_")), [
      "mail_send",
      "mail_send",
      "mail_fetch",
      "mail_ack",
    ]);
  } finally {
    s.stop();
  }
});

Deno.test("superseded with a hand-over grace: the socket stays open for self-signals, then ends", async () => {
  const c = cluster(2);
  const storage = memoryStorage();
  const timers = countedTimers();
  const s = sessionOn(c, storage, timers);
  const told: Array<[string, number | undefined]> = [];
  let closed = 0;
  s.events.onSuperseded = (message, handoverMs) => told.push([message, handoverMs]);
  s.events.onHandoverClosed = () => closed++;
  try {
    await s.login("alice", "password-1");
    const socket = c.servers[0]!.sockets[0]!;
    socket.push({ v: 1, type: "superseded", message: "Signed in elsewhere", handoverMs: 30_000 });
    await waitFor(() => told.length === 1, "superseded");
    assertEquals(told, [["Signed in elsewhere", 30_000]]);
    assertEquals(s.status, "offline");
    assertEquals(storage.data.has("p2pchat.session"), false, "the token is forgotten");
    s.signal("alice", { type: "offer", sdp: "x" });
    assertEquals(socket.sent.at(-1), {
      v: 1,
      type: "signal",
      to: "alice",
      data: { type: "offer", sdp: "x" },
    });
    // The server ends the grace: told once, and no reconnect.
    socket.close(4001);
    await waitFor(() => closed === 1, "hand-over closed");
    await assertStaysClosed(c, timers);
    assertEquals(told.length, 1);
  } finally {
    s.stop();
  }
});

Deno.test("a silent server is left for another within silentServerMs; an idle healthy one is kept", async () => {
  const c = cluster(3);
  const storage = memoryStorage();
  const clock = new ManualClock();
  const timers = clock as unknown as Timers;
  const s = new Session(
    { openSocket: c.openSocket, storage, timers },
    { homeServer: c.bases[0]!, ...fast, livenessCheckMs: 1000, silentServerMs: 4000 },
  );
  const resumedOn: string[] = [];
  s.events.onResumed = () => resumedOn.push(s.currentServer);
  try {
    await s.login("alice", "password-1");
    // Idle but answering: pinged when quiet, never left.
    await clock.advance(20_000);
    assertEquals(s.currentServer, c.bases[0]);
    assertEquals(c.servers[0]!.sockets.length, 1, "the healthy server was not left");
    assert(c.servers[0]!.sockets[0]!.sent.some((f) => f.type === "ping"), "it was pinged");

    // The home server and the next one freeze: sockets stay open, nothing arrives.
    c.servers[0]!.isFrozen = true;
    c.servers[1]!.isFrozen = true;
    await clock.advance(3_000);
    assertEquals(s.currentServer, c.bases[0], "not left before silentServerMs");
    await clock.advance(1_000);
    assert(s.currentServer !== c.bases[0], "left after silentServerMs");
    // The next server never even opens the socket: given up after silentServerMs too.
    for (let i = 0; i < 10 && resumedOn.length === 0; i++) await clock.advance(1_000);
    assertEquals(resumedOn, [c.bases[2]]);
    assertEquals(s.status, "online");
  } finally {
    s.stop();
  }
  assertEquals(clock.pendingTimers, 0, "no timer left after stop");
});

Deno.test("logout tells the server before the socket closes, and forgets the token", async () => {
  const c = cluster(1);
  const storage = memoryStorage();
  const s = new Session({ openSocket: c.openSocket, storage }, {
    homeServer: c.bases[0]!,
    ...fast,
  });
  await s.login("alice", "password-1");
  const socket = c.servers[0]!.sockets.at(-1)!;
  s.logout();
  assertEquals(socket.sent.at(-1)?.type, "logout");
  assertEquals(socket.readyState, 3, "closed after the logout frame");
  assertEquals([...storage.data.keys()].filter((k) => k.includes("session")), []);
  // Logged out already: a second logout sends nothing.
  const before = socket.sent.length;
  s.logout();
  assertEquals(socket.sent.length, before);
});

Deno.test("tokens are refreshed before they expire; the session keeps the token it began with and resumes with the newest", async () => {
  const c = cluster(2);
  for (const srv of c.servers) srv.accessTtlMs = 400;
  const storage = memoryStorage();
  const s = sessionOn(c, storage);
  let resumed = 0;
  s.events.onResumed = () => resumed++;
  try {
    const info = await s.login("alice", "password-1");
    assertEquals(info.refreshToken, "refresh-0123456789-0");
    // Refreshed at half the lifetime, again and again, each time with the newest refresh token.
    await waitFor(() => c.servers[0]!.shared.refreshes >= 2, "two refreshes", 10_000);
    const stored = s.storedSession()!;
    assertEquals(stored.token, info.token, "the token it began with names the session here");
    assert(stored.accessToken?.startsWith("token-0123456789-refreshed-"), stored.accessToken);
    assert(stored.refreshToken?.startsWith("refresh-0123456789-"), stored.refreshToken);
    // After a fail-over the session resumes with its newest access token.
    const home = c.servers[0]!;
    home.isUp = false;
    home.sockets.forEach((sock) => sock.close());
    await waitFor(() => resumed === 1 && s.status === "online", "resumed elsewhere", 10_000);
    const resume = c.servers[1]!.sockets.flatMap((sock) => sock.sent).find((f) =>
      f.type === "resume" || f.type === "refresh"
    );
    assert(resume !== undefined, "resumed or refreshed on the other server");
    if (resume.type === "resume") {
      assert(resume.token.startsWith("token-0123456789-refreshed-"), "a refreshed token");
    }
    assertEquals(s.storedSession()?.token, info.token);
  } finally {
    s.stop();
  }
});
