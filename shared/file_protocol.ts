/**
 * Files between browsers (DESIGN §3, issue 15). A file travels as two parts:
 *
 * - Its {@link FileMeta} — name, size, type, SHA-256 of the content, a fresh AES-256-GCM key and a
 *   small thumbnail for images — inside the sealed chat message that announces it (the `file`
 *   field of the sealed body, `crypto/envelope.ts`), so it is signed by the sender and readable
 *   by the recipient only. The file's id is that message's id.
 * - Its content in {@link FILE_CHUNK_BYTES} chunks, each encrypted on its own with the file key
 *   ({@link encryptChunk}: the IV is the chunk index, the additional data names the file and the
 *   index), carried as {@link FileFrame}s: over the data channel, or as mailbox entries for an
 *   offline recipient. A chunk carries ciphertext only.
 *
 * The receiver pulls: it asks with `file_have` for the chunks from its first missing one (after
 * the announcement, every few chunks as progress, and again when a dropped channel re-opens), the
 * sender answers with the chunks from there. `file_cancel` stops a transfer on both sides.
 *
 * The parsers take `unknown` and return the typed value or throw a `ProtocolError`.
 */
import { ProtocolError, readNumber, readObject, readString } from "./validate.ts";

/** Plain bytes per chunk: one encrypted chunk frame (base64url) stays below a mailbox entry. */
export const FILE_CHUNK_BYTES = 11 * 1024;
/** AES-GCM tag appended to each encrypted chunk. */
export const CHUNK_TAG_BYTES = 16;
/** Largest file the protocol carries at all (each user's own limit is a setting below it). */
export const MAX_FILE_BYTES = 1024 * 1024 * 1024;
/** Largest thumbnail, in base64url characters (about 6 KB: the sealed message fits a mailbox). */
export const MAX_THUMBNAIL_CHARS = 8_000;
/** Longest file name, in characters. */
export const MAX_FILE_NAME = 255;
/** Image types shown inline. */
export const INLINE_IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"] as const;

const B64 = /^[A-Za-z0-9_-]*$/;
const FILE_ID = /^[A-Za-z0-9_-]{8,64}$/;
const MIME = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$/;
/** Control characters and path separators are not allowed in a file name. */
// deno-lint-ignore no-control-regex
const NAME = /^[^\u0000-\u001f\u007f/\\]+$/;

/** What the sealed message tells about its file. */
export interface FileMeta {
  name: string;
  /** Bytes of the content. */
  size: number;
  /** Media type as the sender's browser named it (`application/octet-stream` if unknown). */
  mime: string;
  /** SHA-256 of the content, base64url. */
  sha256: string;
  /** The AES-256-GCM key of the chunks, raw, base64url. */
  key: string;
  /** A small JPEG/PNG/WebP preview of an image, base64url. */
  thumb?: string;
  /** The thumbnail's media type. */
  thumbMime?: "image/jpeg" | "image/png" | "image/webp";
}

/** Chunk frames, over the data channel or as mailbox entries. */
export type FileFrame =
  /** Chunk `index` of file `id`: base64url ciphertext. */
  | { v: 1; type: "file_chunk"; id: string; index: number; data: string }
  /** The receiver holds every chunk before `next` (all of them when `next` is the count). */
  | { v: 1; type: "file_have"; id: string; next: number }
  /** Either side stops the transfer of `id`. */
  | { v: 1; type: "file_cancel"; id: string };

/** The frame types of {@link FileFrame}. */
export const FILE_FRAME_TYPES = ["file_chunk", "file_have", "file_cancel"] as const;

/** How many chunks a file of `size` bytes has. */
export function chunkCount(size: number): number {
  return Math.ceil(size / FILE_CHUNK_BYTES);
}

/** Plain bytes of chunk `index` of a file of `size` bytes (throws for an index out of range). */
export function chunkPlainLength(size: number, index: number): number {
  const count = chunkCount(size);
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new ProtocolError("bad_frame", "index", `Chunk ${index} is out of range 0..${count - 1}`);
  }
  return index === count - 1 ? size - index * FILE_CHUNK_BYTES : FILE_CHUNK_BYTES;
}

/** Whether files of `mime` are shown inline as images. */
export function isInlineImage(mime: string): boolean {
  return (INLINE_IMAGE_TYPES as readonly string[]).includes(mime.toLowerCase());
}

/** Validates a {@link FileMeta} found at `path`. */
export function validateFileMeta(value: unknown, path = "file"): FileMeta {
  const obj = readObject(value, path);
  const meta: FileMeta = {
    name: readString(obj, "name", path, { min: 1, max: MAX_FILE_NAME, pattern: NAME }),
    size: readNumber(obj, "size", path, { min: 0, max: MAX_FILE_BYTES, integer: true }),
    mime: readString(obj, "mime", path, { min: 3, max: 129, pattern: MIME }),
    sha256: readString(obj, "sha256", path, { min: 43, max: 43, pattern: B64 }),
    key: readString(obj, "key", path, { min: 43, max: 43, pattern: B64 }),
  };
  if (obj.thumb !== undefined) {
    meta.thumb = readString(obj, "thumb", path, { min: 1, max: MAX_THUMBNAIL_CHARS, pattern: B64 });
    const t = obj.thumbMime;
    if (t !== "image/jpeg" && t !== "image/png" && t !== "image/webp") {
      throw new ProtocolError(
        "bad_frame",
        `${path}.thumbMime`,
        "A thumbnail must be image/jpeg, image/png or image/webp",
      );
    }
    meta.thumbMime = t;
  }
  return meta;
}

/**
 * Validates a chunk frame's fields (already known to be of a {@link FILE_FRAME_TYPES} type).
 * Only the shape: whether an index is in range for its file is the receiver's check
 * ({@link checkChunk}), since only it knows the announced size.
 */
export function validateFileFrame(obj: Record<string, unknown>, type: string): FileFrame {
  const id = readString(obj, "id", "", { pattern: FILE_ID, max: 64 });
  const count = { min: 0, max: chunkCount(MAX_FILE_BYTES), integer: true };
  switch (type as FileFrame["type"]) {
    case "file_chunk":
      return {
        v: 1,
        type: "file_chunk",
        id,
        index: readNumber(obj, "index", "", count),
        data: readString(obj, "data", "", {
          min: 1,
          max: Math.ceil(((FILE_CHUNK_BYTES + CHUNK_TAG_BYTES) * 4) / 3),
          pattern: B64,
        }),
      };
    case "file_have":
      return { v: 1, type: "file_have", id, next: readNumber(obj, "next", "", count) };
    case "file_cancel":
      return { v: 1, type: "file_cancel", id };
  }
  throw new ProtocolError("unknown_type", "type", `Not a file frame: ${type}`);
}

/**
 * Checks a chunk against its file's announced size: the index is in range and the ciphertext
 * is exactly that chunk's length plus the tag. Returns the ciphertext bytes.
 */
export function checkChunk(meta: Pick<FileMeta, "size">, index: number, data: Uint8Array): void {
  const plain = chunkPlainLength(meta.size, index);
  if (data.length !== plain + CHUNK_TAG_BYTES) {
    throw new ProtocolError(
      "bad_frame",
      "data",
      `Chunk ${index} holds ${data.length} bytes; ${plain + CHUNK_TAG_BYTES} were announced`,
    );
  }
}

/** The IV of chunk `index`: its index, big-endian, in 12 bytes (the key is used for one file). */
function chunkIv(index: number): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(index));
  return iv;
}

function chunkAad(id: string, index: number): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`p2p-chat file chunk v1\n${id}\n${index}`);
}

/** Imports a file key (raw, 32 bytes). */
export function importFileKey(raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** Encrypts chunk `index` of file `id`. */
export async function encryptChunk(
  key: CryptoKey,
  id: string,
  index: number,
  plain: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: chunkIv(index), additionalData: chunkAad(id, index) },
      key,
      plain,
    ),
  );
}

/** Decrypts chunk `index` of file `id`; throws a `ProtocolError` if it does not verify. */
export async function decryptChunk(
  key: CryptoKey,
  id: string,
  index: number,
  data: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: chunkIv(index), additionalData: chunkAad(id, index) },
        key,
        data,
      ),
    );
  } catch {
    throw new ProtocolError("bad_frame", "data", `Chunk ${index} of ${id} does not decrypt`);
  }
}
