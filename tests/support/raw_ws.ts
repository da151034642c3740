/**
 * A WebSocket client at the byte level, for tests that must send what no browser would: frame
 * headers announcing huge payloads, endless fragments, payloads that trickle in. It does the
 * handshake over a real TCP connection, writes frames it encodes itself (masked, as a client
 * must) and decodes the server's frames.
 */
import {
  encodeFragment,
  encodeFrame,
  encodeHeader,
  FrameDecoder,
  OP,
} from "../../shared/ws_frames.ts";

export { encodeFragment, encodeFrame, encodeHeader, OP };

const MASK = new Uint8Array([0x11, 0x22, 0x33, 0x44]);

/** What the server sent, frame by frame. */
export type ServerEvent =
  | { type: "message"; data: string | Uint8Array }
  | { type: "ping" | "pong" }
  | { type: "close"; code?: number; reason: string }
  | { type: "end" };

/** One raw connection to a server's `/ws`. */
export class RawWebSocket {
  readonly events: ServerEvent[] = [];
  #conn: Deno.TcpConn;
  #changed: (() => void)[] = [];
  /** Resolves when the server has ended the connection. */
  readonly ended: Promise<void>;

  private constructor(conn: Deno.TcpConn, rest: Uint8Array) {
    this.#conn = conn;
    this.ended = this.#read(rest);
  }

  /**
   * Connects to `serverUrl` (http://host:port) and completes the handshake on `path`, with
   * `headers` (lines "Name: value") added to the request.
   */
  static async connect(
    serverUrl: string,
    path = "/ws",
    headers: string[] = [],
  ): Promise<RawWebSocket> {
    const url = new URL(serverUrl);
    const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await writeAll(
      conn,
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
          headers.map((h) => `${h}\r\n`).join("") + "\r\n",
      ),
    );
    let received: Uint8Array = new Uint8Array(0);
    const buffer = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("The server closed the connection during the handshake");
      received = join(received, buffer.subarray(0, n));
      const text = new TextDecoder().decode(received);
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) continue;
      if (!text.startsWith("HTTP/1.1 101")) {
        conn.close();
        throw new Error(`Handshake refused: ${text.slice(0, end)}`);
      }
      return new RawWebSocket(conn, received.subarray(end + 4));
    }
  }

  /** Writes raw bytes; false once the server has closed the connection. */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      await writeAll(this.#conn, bytes);
      return true;
    } catch {
      return false;
    }
  }

  /** Sends one masked frame (FIN set unless `fin` is false). */
  send(opcode: number, payload: Uint8Array, fin = true): Promise<boolean> {
    return this.write(encodeFragment(opcode, payload, fin, MASK));
  }

  /** Sends a text message. */
  sendText(text: string): Promise<boolean> {
    return this.write(encodeFrame(OP.text, new TextEncoder().encode(text), MASK));
  }

  /** Resolves with the first event matching `match`, waiting up to `timeoutMs`. */
  async next(match: (e: ServerEvent) => boolean, timeoutMs = 30_000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = this.events.find(match);
      if (found) {
        this.events.splice(this.events.indexOf(found), 1);
        return found;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`No matching event in ${timeoutMs} ms; got ${JSON.stringify(this.events)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#changed.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Closes the connection from this side. */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  #push(event: ServerEvent): void {
    this.events.push(event);
    for (const wake of this.#changed.splice(0)) wake();
  }

  async #read(rest: Uint8Array): Promise<void> {
    const decoder = new FrameDecoder({ maxMessageBytes: 64 * 1024 * 1024, requireMask: false });
    const buffer = new Uint8Array(16 * 1024);
    try {
      let chunk = rest;
      while (true) {
        for (const frame of decoder.push(chunk)) {
          this.#push(frame.type === "ping" || frame.type === "pong" ? { type: frame.type } : frame);
        }
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        chunk = buffer.subarray(0, n);
      }
    } catch {
      // A reset: the server dropped the connection.
    }
    this.#push({ type: "end" });
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
