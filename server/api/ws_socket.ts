/**
 * One server-side WebSocket over a TCP (or TLS) connection whose handshake `ws_front.ts` read:
 * frames in through {@link FrameDecoder} (capped before buffering), frames out through a
 * bounded write queue, ping on idle, and the close handshake. It implements the hub's
 * {@link ClientSocket}, so the hub keeps no framing logic.
 */
import type { ClientSocket } from "./client_hub.ts";
import { takeJoined } from "../../shared/bytes.ts";
import {
  CLOSE,
  closePayload,
  encodeFrame,
  FrameDecoder,
  OP,
  WsCloseError,
} from "../../shared/ws_frames.ts";

/** Options of a {@link ServerWebSocket}. */
export interface ServerWebSocketOptions {
  /** Largest message a client may send, in bytes: bigger ones close the socket with 1009. */
  maxMessageBytes: number;
  /** A ping goes out after this long; a client silent for as long again is dropped, in ms. */
  idleTimeoutMs: number;
  /** Most bytes queued for a client that does not read; past it the socket is dropped. */
  maxBufferedBytes: number;
  /** Called once when the server closes the socket because the client broke the protocol. */
  onProtocolClose?: (code: number, reason: string) => void;
  /** Called once when the connection has ended (before `onclose`). */
  onEnd?: () => void;
}

/** How long the server waits for the client's answer to its close frame, in ms. */
const CLOSE_WAIT_MS = 5000;
/**
 * How long, after its close frame is out, the server still reads (and drops) what the client
 * sends, in ms: closing a socket with unread bytes resets it, and a reset can destroy the close
 * frame before the client reads it (a lingering close).
 */
const LINGER_MS = 2000;
const READ_CHUNK = 16 * 1024;
/** Most bytes of queued frames joined into one write. */
const WRITE_CHUNK = 64 * 1024;
const encoder = new TextEncoder();

/** A WebSocket the server speaks itself, on a connection it owns. */
export class ServerWebSocket implements ClientSocket {
  onmessage: ((event: { data: string | Uint8Array }) => void) | null = null;
  onclose: (() => void) | null = null;
  #conn: Deno.Conn;
  #options: ServerWebSocketOptions;
  #decoder: FrameDecoder;
  #state: "connecting" | "open" | "closing" | "closed" = "connecting";
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #started = false;
  /** End the connection once the queue is written (after a close frame). */
  #endAfterFlush = false;
  #lingering = false;
  #lastHeard = Date.now();
  #idleTimer?: ReturnType<typeof setInterval>;
  #closeTimer?: ReturnType<typeof setTimeout>;

  constructor(conn: Deno.Conn, options: ServerWebSocketOptions) {
    this.#conn = conn;
    this.#options = options;
    this.#decoder = new FrameDecoder({ maxMessageBytes: options.maxMessageBytes });
  }

  /** Whether messages can be sent. */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  /**
   * Writes the handshake's `response` bytes, then reads frames: first those in `rest` (bytes
   * that came with the request head), then from the connection until it closes.
   */
  start(response: Uint8Array, rest: Uint8Array): void {
    if (this.#state === "connecting") this.#state = "open";
    this.#queue.unshift(response);
    this.#queued += response.length;
    this.#started = true;
    this.#pump();
    this.#idleTimer = setInterval(() => this.#checkIdle(), this.#options.idleTimeoutMs);
    this.#read(rest);
  }

  /** Sends one text message; dropped if the socket is not open. */
  send(text: string): void {
    if (this.#state !== "open") return;
    this.#write(encodeFrame(OP.text, encoder.encode(text)));
  }

  /** Starts the close handshake with `code` and `reason`. */
  close(code: number = CLOSE.normal, reason = ""): void {
    if (this.#state !== "open" && this.#state !== "connecting") return;
    this.#state = "closing";
    this.#write(encodeFrame(OP.close, closePayload(code, reason)));
    this.#closeTimer = setTimeout(() => this.#destroy(), CLOSE_WAIT_MS);
  }

  /** Ends the connection now, without a close handshake. */
  destroy(): void {
    this.#destroy();
  }

  async #read(rest: Uint8Array): Promise<void> {
    const buffer = new Uint8Array(READ_CHUNK);
    try {
      if (rest.length) this.#feedOrFail(rest);
      while (this.#state !== "closed") {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.#lastHeard = Date.now();
        // After our close frame, what the client still sends is read and dropped, unbuffered.
        if (!this.#endAfterFlush) this.#feedOrFail(buffer.subarray(0, n));
      }
    } catch {
      // A reset or a TLS error: the connection is gone.
    }
    this.#destroy();
  }

  #feedOrFail(bytes: Uint8Array): void {
    try {
      this.#feed(bytes);
    } catch (err) {
      if (!(err instanceof WsCloseError)) throw err;
      this.#fail(err.code, err.reason);
    }
  }

  /** Decodes `bytes` and acts on each frame; throws {@link WsCloseError}. */
  #feed(bytes: Uint8Array): void {
    for (const frame of this.#decoder.push(bytes)) {
      if (this.#state === "closed" || this.#endAfterFlush) return;
      switch (frame.type) {
        case "message":
          // After our close frame, the client's remaining messages are not for the hub.
          if (this.#state === "open") this.onmessage?.({ data: frame.data });
          break;
        case "ping":
          if (this.#state === "open") this.#write(encodeFrame(OP.pong, frame.payload));
          break;
        case "pong":
          break;
        case "close":
          if (this.#state === "open") {
            // Echo the client's code, then drop the connection (the server closes TCP first).
            this.#state = "closing";
            const payload = frame.code === undefined
              ? new Uint8Array(0)
              : closePayload(frame.code, "");
            this.#write(encodeFrame(OP.close, payload));
            this.#endAfterFlush = true;
            this.#flushThenEnd();
          } else {
            this.#destroy();
          }
          return;
      }
    }
  }

  /** The client broke the protocol (or sent too much): say why, then drop the connection. */
  #fail(code: number, reason: string): void {
    if (this.#state === "closed") return;
    this.#options.onProtocolClose?.(code, reason);
    const wasOpen = this.#state === "open";
    this.#state = "closing";
    // A close frame of ours may already be out: RFC 6455 allows one only.
    if (wasOpen) this.#write(encodeFrame(OP.close, closePayload(code, reason)));
    this.#endAfterFlush = true;
    this.#flushThenEnd();
  }

  #flushThenEnd(): void {
    clearTimeout(this.#closeTimer);
    // A client that does not read cannot hold the connection open.
    this.#closeTimer = setTimeout(() => this.#destroy(), CLOSE_WAIT_MS);
    if (!this.#writing && this.#queue.length === 0) this.#linger();
  }

  #checkIdle(): void {
    if (Date.now() - this.#lastHeard > 2 * this.#options.idleTimeoutMs) {
      this.#fail(CLOSE.goingAway, "Idle timeout");
      return;
    }
    if (this.#state === "open") this.#write(encodeFrame(OP.ping, new Uint8Array(0)));
  }

  #write(frame: Uint8Array): void {
    if (this.#state === "closed") return;
    if (this.#queued + frame.length > this.#options.maxBufferedBytes) {
      // The client does not read what it asked for: it may not make the server hold more.
      this.#destroy();
      return;
    }
    this.#queue.push(frame);
    this.#queued += frame.length;
    this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#writing || !this.#started) return;
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && this.#state !== "closed") {
        // Every frame queued meanwhile goes in one write (up to WRITE_CHUNK bytes): one write
        // per frame took an event-loop turn each, and a busy server let answers trickle out.
        const chunk = takeJoined(this.#queue, WRITE_CHUNK);
        this.#queued -= chunk.length;
        let at = 0;
        while (at < chunk.length) at += await this.#conn.write(chunk.subarray(at));
      }
    } catch {
      this.#destroy();
    } finally {
      this.#writing = false;
    }
    if (this.#endAfterFlush) this.#linger();
  }

  /**
   * Our close frame is written: half-close, so the client reads it followed by the end of the
   * stream, and end the connection when the client does, or after {@link LINGER_MS}. The read
   * loop meanwhile drops whatever the client still sends.
   */
  async #linger(): Promise<void> {
    if (this.#lingering || this.#state === "closed") return;
    this.#lingering = true;
    clearTimeout(this.#closeTimer);
    this.#closeTimer = setTimeout(() => this.#destroy(), LINGER_MS);
    try {
      await this.#conn.closeWrite();
    } catch {
      this.#destroy();
    }
  }

  #destroy(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#queue = [];
    this.#queued = 0;
    clearInterval(this.#idleTimer);
    clearTimeout(this.#closeTimer);
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#options.onEnd?.();
    this.onclose?.();
  }
}
