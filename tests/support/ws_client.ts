/** A minimal WebSocket client for integration tests, speaking the browser protocol. */
import { parseServerFrame, type ServerFrame } from "../../shared/mod.ts";

/**
 * The salt and keys a test registration sends when the test does not use them: every account
 * has both (the server checks their form only; its tests that need working keys make real ones).
 */
export const TEST_ACCOUNT = {
  salt: "dGVzdC1zYWx0LW9mLWFjYw",
  keys: { encryption: "e".repeat(120), signing: "s".repeat(120), wrapped: "w".repeat(40) },
};

/** How long a reply or an awaited frame may take (generous: busy machines are slow). */
const REPLY_MS = 20_000;

/** A test's connection to one server, recording every frame it receives. */
export class TestClient {
  readonly frames: ServerFrame[] = [];
  #socket: WebSocket;
  #nextReqId = 1;
  #waiters: { match: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void }[] = [];
  #closed: Promise<void>;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    this.#closed = new Promise((r) => socket.addEventListener("close", () => r()));
    socket.onmessage = (e) => {
      const frame = parseServerFrame(e.data);
      this.frames.push(frame);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(frame)) return true;
        w.resolve(frame);
        return false;
      });
    };
  }

  /** Opens a connection to `serverUrl`'s `/ws`. */
  static async connect(serverUrl: string): Promise<TestClient> {
    const socket = new WebSocket(serverUrl.replace(/^http/, "ws") + "/ws");
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`Cannot connect to ${serverUrl}/ws`));
    });
    return new TestClient(socket);
  }

  /** Sends a raw text frame (for malformed-input tests). */
  sendRaw(text: string): void {
    this.#socket.send(text);
  }

  /** Sends `frame` without waiting. */
  send(frame: Record<string, unknown>): void {
    this.#socket.send(JSON.stringify({ v: 1, ...frame }));
  }

  /** Sends a request and resolves with the reply carrying the same reqId. */
  request(frame: Record<string, unknown>, timeoutMs = REPLY_MS): Promise<ServerFrame> {
    const reqId = this.#nextReqId++;
    const reply = this.next((f) => "reqId" in f && f.reqId === reqId, timeoutMs);
    this.send({ ...frame, reqId });
    return reply;
  }

  /** Resolves with the next received frame matching `match` (or one already received). */
  next(match: (f: ServerFrame) => boolean, timeoutMs = REPLY_MS): Promise<ServerFrame> {
    const seen = this.frames.find(match);
    if (seen) {
      this.frames.splice(this.frames.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(`No matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames)}`),
        );
      }, timeoutMs);
      const done = (f: ServerFrame) => {
        clearTimeout(timer);
        this.frames.splice(this.frames.indexOf(f), 1);
        resolve(f);
      };
      this.#waiters.push({ match, resolve: done });
    });
  }

  /** Registers `username` with {@link TEST_ACCOUNT}'s keys; throws unless the server says ok. */
  async register(username: string, secret: string, timeoutMs = REPLY_MS): Promise<void> {
    const r = await this.request(
      { type: "register", username, secret, ...TEST_ACCOUNT },
      timeoutMs,
    );
    if (r.type !== "ok") throw new Error(`register ${username} failed: ${JSON.stringify(r)}`);
  }

  /** Registers (if `register`) and logs in; returns the session frame. */
  async login(username: string, secret: string, register = true) {
    if (register) await this.register(username, secret);
    // As a browser does, a login told `unavailable` (the ring could not record the session in
    // time: servers down, or a busy machine) is tried again, for a while.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = await this.request({ type: "login", username, secret });
      if (s.type === "session") return s;
      if (s.type !== "error" || s.code !== "unavailable" || Date.now() > deadline) {
        throw new Error(`login ${username} failed: ${JSON.stringify(s)}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Whether the server (or this side) has closed the connection. */
  get isClosed(): boolean {
    return this.#socket.readyState === WebSocket.CLOSED;
  }

  /** Resolves once the connection is closed (by either side); fails after `timeoutMs`. */
  async waitClosed(what: string, timeoutMs = REPLY_MS): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([this.#closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the connection and waits until it is closed. */
  async close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((r) => this.#socket.addEventListener("close", r));
    this.#socket.close();
    await closed;
  }
}
