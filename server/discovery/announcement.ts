/**
 * The multicast announcement: its wire format (one JSON object per datagram), the text its
 * signature covers, and the parser that turns a datagram into a typed announcement or throws an
 * {@link AnnouncementError} naming the bad field.
 */
import type { Signer } from "./deps.ts";

/** Largest datagram a listener reads; a real announcement is about 250 bytes. */
export const MAX_ANNOUNCEMENT_BYTES = 1024;

/** "I am a server of this cluster and you reach me at `address`." */
export interface Announcement {
  v: 1;
  type: "announce";
  /** The sender's ring id, once the ring has them. */
  nodeId?: string;
  /** The sender's base URL, as other servers reach it. */
  address: string;
  /** Sender's clock when sent, in ms since the epoch; bounds how long a copy can be replayed. */
  time: number;
  /** Random per announcement; a listener refuses a nonce it has seen within the window. */
  nonce: string;
}

/** An announcement as read off the wire, before its signature is checked. */
export interface SignedAnnouncement {
  announcement: Announcement;
  /** The HMAC of {@link signingText}; absent on an unsigned datagram. */
  sig: string | undefined;
}

/** A datagram is not a well-formed announcement. */
export class AnnouncementError extends Error {
  override name = "AnnouncementError";
}

const ADDRESS = /^https?:\/\/[^\s/]{1,253}$/;
const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const NODE_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const encoder = new TextEncoder();

/**
 * The exact text the signature covers. The leading tag keeps an announcement's signature from
 * being valid for any other message signed with the cluster secret (RPC bodies, tokens).
 */
export function signingText(a: Announcement): string {
  return ["p2pchat-announce", a.v, a.nodeId ?? "", a.address, a.time, a.nonce].join("\n");
}

/** A fresh announcement of `address` stamped with `time` and a random nonce. */
export function createAnnouncement(address: string, time: number, nodeId?: string): Announcement {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const nonce = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return {
    v: 1,
    type: "announce",
    ...(nodeId === undefined ? {} : { nodeId }),
    address,
    time,
    nonce,
  };
}

/** The signed datagram carrying `announcement`. */
export async function encodeAnnouncement(
  signer: Signer,
  announcement: Announcement,
): Promise<Uint8Array> {
  const sig = await signer.sign(signingText(announcement));
  return encoder.encode(JSON.stringify({ ...announcement, sig }));
}

function field<T>(ok: boolean, path: string, value: unknown, what: string): T {
  if (!ok) {
    throw new AnnouncementError(`announce.${path} must be ${what}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

/** Parses a datagram; throws {@link AnnouncementError} naming the field when it is malformed. */
export function parseAnnouncement(data: Uint8Array): SignedAnnouncement {
  if (data.byteLength > MAX_ANNOUNCEMENT_BYTES) {
    throw new AnnouncementError(
      `announce is ${data.byteLength} bytes, more than ${MAX_ANNOUNCEMENT_BYTES}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    throw new AnnouncementError("announce is not UTF-8 JSON");
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new AnnouncementError("announce must be a JSON object");
  }
  const o = raw as Record<string, unknown>;
  field(o.v === 1, "v", o.v, "1");
  field(o.type === "announce", "type", o.type, '"announce"');
  const address = field<string>(
    typeof o.address === "string" && ADDRESS.test(o.address),
    "address",
    o.address,
    "a base URL like http://10.0.0.2:8000",
  );
  const time = field<number>(
    Number.isSafeInteger(o.time) && (o.time as number) > 0,
    "time",
    o.time,
    "a positive integer (ms since the epoch)",
  );
  const nonce = field<string>(
    typeof o.nonce === "string" && NONCE.test(o.nonce),
    "nonce",
    o.nonce,
    "16–64 base64url characters",
  );
  const nodeId = o.nodeId === undefined ? undefined : field<string>(
    typeof o.nodeId === "string" && NODE_ID.test(o.nodeId),
    "nodeId",
    o.nodeId,
    "1–128 letters, digits or . _ : -",
  );
  const sig = o.sig === undefined
    ? undefined
    : field<string>(typeof o.sig === "string" && o.sig.length <= 128, "sig", o.sig, "a string");
  const announcement: Announcement = {
    v: 1,
    type: "announce",
    ...(nodeId === undefined ? {} : { nodeId }),
    address,
    time,
    nonce,
  };
  return { announcement, sig };
}
