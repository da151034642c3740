/**
 * RFC 6455 framing, pure: {@link FrameDecoder} turns a peer's bytes into messages and control
 * frames, refusing a frame whose announced length would take a message past the cap before a
 * byte of its payload is stored; {@link encodeFrame} writes frames (masked when a client sends
 * them). No I/O here: the server's front (`server/api/ws_front.ts`) feeds the decoder from a
 * browser's connection, and a server's link to another (`server/cluster/link.ts`) from its own.
 */

import { concatBytes } from "./bytes.ts";

/** Opcodes of RFC 6455 §5.2. */
export const OP = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/** Close codes of RFC 6455 §7.4.1 the server sends. */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidData: 1007,
  tooBig: 1009,
} as const;

/** Largest payload of a control frame (close, ping, pong), RFC 6455 §5.5. */
export const MAX_CONTROL_PAYLOAD = 125;

/** What the decoder read: a whole message, or a control frame. */
export type DecodedFrame =
  | { type: "message"; data: string | Uint8Array }
  | { type: "ping"; payload: Uint8Array }
  | { type: "pong"; payload: Uint8Array }
  | { type: "close"; code?: number; reason: string };

/** A client broke the protocol: the connection must be closed with `code`. */
export class WsCloseError extends Error {
  constructor(readonly code: number, readonly reason: string) {
    super(reason);
    this.name = "WsCloseError";
  }
}

/** Options of a {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest message (the sum of its fragments' payloads), in bytes. */
  maxMessageBytes: number;
  /** Whether frames must be masked (true for frames from a client). @default true */
  requireMask?: boolean;
}

/** A frame whose header is read and whose payload is being filled. */
interface PendingFrame {
  fin: boolean;
  opcode: number;
  mask?: Uint8Array;
  payload: Uint8Array;
  filled: number;
}

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Incremental decoder of one connection's frames. Memory held: at most 14 header bytes, the
 * current frame's payload (allocated once its header is read, and only if the running message
 * stays within the cap) and the earlier fragments of the current message: never more than the
 * cap plus a control frame.
 */
export class FrameDecoder {
  #max: number;
  #requireMask: boolean;
  #header = new Uint8Array(14);
  #headerLength = 0;
  /** The frame being read, once its header is complete. */
  #frame?: PendingFrame;
  /** The fragmented message in progress: its opcode and earlier fragments. */
  #message?: { opcode: number; parts: Uint8Array[]; bytes: number };
  #failed = false;

  constructor(options: FrameDecoderOptions) {
    this.#max = options.maxMessageBytes;
    this.#requireMask = options.requireMask ?? true;
  }

  /**
   * Reads `chunk` (which the decoder does not keep) and returns the frames it completed.
   * Throws {@link WsCloseError} on a protocol violation or an oversized message; after that the
   * decoder refuses all input.
   */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.#failed) throw new WsCloseError(CLOSE.protocolError, "Connection already failed");
    try {
      return this.#push(chunk);
    } catch (err) {
      this.#failed = true;
      // Drop what was held: the connection is about to close.
      this.#frame = undefined;
      this.#message = undefined;
      throw err;
    }
  }

  #push(chunk: Uint8Array): DecodedFrame[] {
    const out: DecodedFrame[] = [];
    let at = 0;
    while (at < chunk.length) {
      let frame = this.#frame;
      if (!frame) {
        const read = this.#readHeader(chunk.subarray(at));
        at += read.used;
        if (!read.frame) break;
        frame = this.#frame = read.frame;
      }
      const take = Math.min(frame.payload.length - frame.filled, chunk.length - at);
      frame.payload.set(chunk.subarray(at, at + take), frame.filled);
      frame.filled += take;
      at += take;
      if (frame.filled === frame.payload.length) {
        this.#frame = undefined;
        const done = this.#complete(frame);
        if (done) out.push(done);
      }
    }
    return out;
  }

  /** Copies header bytes from `bytes`; once complete, validates it and starts the frame. */
  #readHeader(bytes: Uint8Array): { used: number; frame?: PendingFrame } {
    const h = this.#header;
    let used = 0;
    const need = () => {
      if (this.#headerLength < 2) return 2;
      const len7 = h[1]! & 0x7f;
      const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      return 2 + ext + (h[1]! & 0x80 ? 4 : 0);
    };
    while (this.#headerLength < need() && used < bytes.length) {
      h[this.#headerLength++] = bytes[used++]!;
      if (this.#headerLength === 2) this.#checkFirstBytes();
    }
    if (this.#headerLength < need()) return { used };
    const fin = (h[0]! & 0x80) !== 0;
    const opcode = h[0]! & 0x0f;
    const masked = (h[1]! & 0x80) !== 0;
    const len7 = h[1]! & 0x7f;
    let length: number;
    let at = 2;
    if (len7 === 126) {
      length = (h[2]! << 8) | h[3]!;
      at = 4;
    } else if (len7 === 127) {
      if (h[2]! & 0x80) {
        throw new WsCloseError(CLOSE.protocolError, "Frame length has its top bit set");
      }
      // Read as a float: exact up to 2^53, and anything near that is refused below anyway.
      length = 0;
      for (let i = 2; i < 10; i++) length = length * 256 + h[i]!;
      at = 10;
    } else {
      length = len7;
    }
    this.#checkLength(opcode, length);
    const mask = masked ? h.slice(at, at + 4) : undefined;
    this.#headerLength = 0;
    return { used, frame: { fin, opcode, mask, payload: new Uint8Array(length), filled: 0 } };
  }

  /** Checks what the first two bytes say, before any length byte is read. */
  #checkFirstBytes(): void {
    const h = this.#header;
    if (h[0]! & 0x70) throw new WsCloseError(CLOSE.protocolError, "Reserved bits set");
    const opcode = h[0]! & 0x0f;
    const fin = (h[0]! & 0x80) !== 0;
    const masked = (h[1]! & 0x80) !== 0;
    if (this.#requireMask && !masked) {
      throw new WsCloseError(CLOSE.protocolError, "Client frames must be masked");
    }
    if (opcode >= 0x8) {
      if (opcode > OP.pong) throw new WsCloseError(CLOSE.protocolError, `Unknown opcode ${opcode}`);
      if (!fin) {
        throw new WsCloseError(CLOSE.protocolError, "Control frames must not be fragmented");
      }
      if ((h[1]! & 0x7f) > MAX_CONTROL_PAYLOAD) {
        throw new WsCloseError(CLOSE.protocolError, "Control frame payload over 125 bytes");
      }
      return;
    }
    if (opcode > OP.binary) throw new WsCloseError(CLOSE.protocolError, `Unknown opcode ${opcode}`);
    if (opcode === OP.continuation && !this.#message) {
      throw new WsCloseError(
        CLOSE.protocolError,
        "Continuation frame without a message to continue",
      );
    }
    if (opcode !== OP.continuation && this.#message) {
      throw new WsCloseError(CLOSE.protocolError, "New message before the previous one ended");
    }
  }

  /** Refuses a data frame that would take its message past the cap: before any allocation. */
  #checkLength(opcode: number, length: number): void {
    if (opcode >= 0x8) return; // ≤ 125, checked with the first bytes
    const before = this.#message?.bytes ?? 0;
    if (before + length > this.#max) {
      throw new WsCloseError(
        CLOSE.tooBig,
        `Message over ${this.#max} bytes`,
      );
    }
  }

  /** A frame's payload is complete: unmask it and return what it finishes, if anything. */
  #complete(frame: PendingFrame): DecodedFrame | undefined {
    const { payload, mask } = frame;
    if (mask) {
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
    }
    switch (frame.opcode) {
      case OP.ping:
        return { type: "ping", payload };
      case OP.pong:
        return { type: "pong", payload };
      case OP.close:
        return parseClose(payload);
    }
    if (frame.opcode !== OP.continuation) {
      this.#message = { opcode: frame.opcode, parts: [], bytes: 0 };
    }
    const message = this.#message!;
    message.parts.push(payload);
    message.bytes += payload.length;
    if (!frame.fin) return undefined;
    this.#message = undefined;
    const data = message.parts.length === 1 ? message.parts[0]! : concatBytes(message.parts);
    if (message.opcode === OP.binary) return { type: "message", data };
    return { type: "message", data: decodeUtf8(data) };
  }
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return fatalUtf8.decode(bytes);
  } catch {
    throw new WsCloseError(CLOSE.invalidData, "Text is not valid UTF-8");
  }
}

/** Whether a peer may send `code` in a close frame (RFC 6455 §7.4). */
function isValidCloseCode(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
}

function parseClose(payload: Uint8Array): DecodedFrame {
  if (payload.length === 0) return { type: "close", reason: "" };
  if (payload.length === 1) {
    throw new WsCloseError(CLOSE.protocolError, "Close frame with a one-byte payload");
  }
  const code = (payload[0]! << 8) | payload[1]!;
  if (!isValidCloseCode(code)) {
    throw new WsCloseError(CLOSE.protocolError, `Invalid close code ${code}`);
  }
  return { type: "close", code, reason: decodeUtf8(payload.subarray(2)) };
}

/**
 * Encodes one frame with FIN set. Unmasked unless `mask` is given (servers never mask; tests
 * mask to play a client).
 */
export function encodeFrame(opcode: number, payload: Uint8Array, mask?: Uint8Array): Uint8Array {
  return encodeFragment(opcode, payload, true, mask);
}

/** Encodes one frame, FIN as given (a fragment unless `fin`). */
export function encodeFragment(
  opcode: number,
  payload: Uint8Array,
  fin: boolean,
  mask?: Uint8Array,
): Uint8Array {
  const header = encodeHeader(opcode, payload.length, fin, mask);
  const out = new Uint8Array(header.length + payload.length);
  out.set(header);
  out.set(payload, header.length);
  if (mask) {
    for (let i = 0; i < payload.length; i++) out[header.length + i]! ^= mask[i & 3]!;
  }
  return out;
}

/**
 * The header of a frame announcing `length` payload bytes (the shortest length form), with
 * `mask` if given. Alone, it is what an attacker sends to announce a payload it never sends.
 */
export function encodeHeader(
  opcode: number,
  length: number,
  fin: boolean,
  mask?: Uint8Array,
): Uint8Array {
  const ext = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + (mask ? 4 : 0));
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = (mask ? 0x80 : 0) | (ext === 0 ? length : ext === 2 ? 126 : 127);
  if (ext === 2) {
    out[2] = length >> 8;
    out[3] = length & 0xff;
  } else if (ext === 8) {
    let rest = length;
    for (let i = 9; i >= 2; i--) {
      out[i] = rest % 256;
      rest = Math.floor(rest / 256);
    }
  }
  if (mask) out.set(mask, 2 + ext);
  return out;
}

/** The payload of a close frame: `code` and a reason cut to fit in a control frame. */
export function closePayload(code: number, reason: string): Uint8Array {
  const bytes = new TextEncoder().encode(reason);
  let cut = bytes.subarray(0, MAX_CONTROL_PAYLOAD - 2);
  // Never end inside a UTF-8 sequence: back up to a character boundary.
  if (cut.length < bytes.length) {
    let end = cut.length;
    while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
    cut = bytes.subarray(0, end);
  }
  const out = new Uint8Array(2 + cut.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(cut, 2);
  return out;
}

/** The GUID of RFC 6455 §1.3, appended to the client's key. */
const HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)). */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + HANDSHAKE_GUID),
  );
  let binary = "";
  for (const byte of new Uint8Array(digest)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Whether `key` is a valid `Sec-WebSocket-Key`: base64 of 16 bytes. */
export function isValidKey(key: string): boolean {
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) return false;
  return atob(key).length === 16;
}
