/**
 * Export and import of a user's whole local history as one file encrypted with a passphrase
 * (a backup the user keeps, or takes to a device the history cannot be handed over to), with the
 * files and images this device holds.
 *
 * File layout (version 2): the line {@link EXPORT_MAGIC}, one line of JSON header (owner, export
 * time, key derivation and cipher parameters, number of sections), then the sections, each
 * `[4-byte big-endian length][12-byte IV][AES-256-GCM ciphertext]`. The key is PBKDF2-SHA-256 of
 * the passphrase ({@link EXPORT_ITERATIONS} rounds, random 16-byte salt); every section's
 * additional data is the header and its own index, so neither the header nor the order or number
 * of sections can be altered. Section 0 is the gzip-compressed JSON
 * `{ owner, exportedAt, rows, files: [{ id, status }] }`; section `i` (from 1) holds the content
 * of `files[i - 1]`, whose message (same id) carries its size and SHA-256 (the sealed chat
 * message's {@link FileMeta}). A file thus stays encrypted from the browser that exports it to the
 * one that imports it.
 *
 * Import checks everything before anything is written: every row as a hand-over row (a file is
 * as untrusted as a peer), only into the same user's history; every file against its message
 * (size and SHA-256), at most once, at most {@link MAX_IMPORT_FILES}. Version-1 files (history
 * only, one sealed body) still import.
 */
import type { MessageRow } from "./history.ts";
import { readRow } from "./handover.ts";
import { fromBase64Url, fromUtf8, toBase64Url, utf8 } from "../shared/crypto/encoding.ts";
import { readArray, readObject, readString } from "../shared/validate.ts";
import { isValidUsername } from "../shared/username.ts";
import { validateFileMeta } from "../shared/file_protocol.ts";
import { readAtMost } from "../shared/streams.ts";

/** First line of every export file this code writes. */
export const EXPORT_MAGIC = "P2PCHAT-HISTORY-2\n";
/** First line of the files of the first version (history only). */
const EXPORT_MAGIC_V1 = "P2PCHAT-HISTORY-1\n";
/** PBKDF2 rounds (OWASP's 2023 figure for PBKDF2-HMAC-SHA256). */
export const EXPORT_ITERATIONS = 600_000;
/** Shortest passphrase accepted for an export. */
export const MIN_PASSPHRASE_LENGTH = 8;
/** Most rows a file may hold on import. */
export const MAX_IMPORT_ROWS = 2_000_000;
/** Most files an export file may hold on import. */
export const MAX_IMPORT_FILES = 100_000;
/** Largest history section once inflated, bytes (2 million rows of a few hundred bytes). */
const MAX_HISTORY_JSON_BYTES = 1024 * 1024 * 1024;
/**
 * Most bytes of files an export carries by default (the whole export is built in memory): files
 * past it, newest kept first, are left out and show as "not on this device" after import.
 */
export const DEFAULT_EXPORT_FILE_BYTES = 256 * 1024 * 1024;

/** A file that cannot be imported, with what the user should do. */
export class HistoryFileError extends Error {
  override name = "HistoryFileError";
}

interface Header {
  owner: string;
  exportedAt: number;
  kdf: { name: "PBKDF2"; hash: "SHA-256"; iterations: number; salt: string };
  cipher: { name: "AES-GCM"; iv: string };
  /** Version 2: sections after the header (the history, then one per file). */
  sections?: number;
}

/** How a file carried in an export stands on the device that exported it. */
export type ExportedFileStatus = "complete" | "sending";

/** A file to carry in an export: the message `id`'s attachment, read when its turn comes. */
export interface ExportFile {
  id: string;
  /** Its size (the attachment's), bytes. */
  size: number;
  /** `sending`: an own file the recipient does not hold yet (the new device goes on serving it). */
  status: ExportedFileStatus;
  read(): Promise<Uint8Array<ArrayBuffer> | null>;
}

/** A file of an import, checked against its message. */
export interface ImportedFile {
  id: string;
  status: ExportedFileStatus;
  bytes: Uint8Array<ArrayBuffer>;
}

/** What an export file holds, checked. */
export interface OpenedHistory {
  rows: MessageRow[];
  files: ImportedFile[];
}

async function keyFrom(passphrase: string, salt: Uint8Array<ArrayBuffer>, iterations: number) {
  const base = await crypto.subtle.importKey("raw", utf8(passphrase), "PBKDF2", false, [
    "deriveKey",
  ]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

async function transform(bytes: Uint8Array<ArrayBuffer>, stream: TransformStream) {
  return new Uint8Array(
    await new Response(new Blob([bytes]).stream().pipeThrough(stream)).arrayBuffer(),
  );
}

/** Additional data of section `index`: the header line and the index. */
function sectionData(head: Uint8Array, index: number): Uint8Array<ArrayBuffer> {
  const ad = new Uint8Array(head.length + 4);
  ad.set(head);
  new DataView(ad.buffer).setUint32(head.length, index);
  return ad;
}

/** Options of {@link exportHistoryBlob}. */
export interface ExportOptions {
  /** The files to carry, in order (the caller applies its size cap). */
  files?: readonly ExportFile[];
  /** Export time (tests). */
  now?: number;
  /** `done` of `total` bytes of files encrypted so far. */
  onProgress?(done: number, total: number): void;
}

/**
 * The export file of `owner`'s `rows` and `options.files`, encrypted with `passphrase`, as a
 * Blob (its parts are the encrypted sections: a file's content is dropped once encrypted).
 */
export async function exportHistoryBlob(
  owner: string,
  rows: readonly MessageRow[],
  passphrase: string,
  options: ExportOptions = {},
): Promise<Blob> {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new HistoryFileError(
      `Choose a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters.`,
    );
  }
  const now = options.now ?? Date.now();
  const files = options.files ?? [];
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const header: Header = {
    owner,
    exportedAt: now,
    kdf: {
      name: "PBKDF2",
      hash: "SHA-256",
      iterations: EXPORT_ITERATIONS,
      salt: toBase64Url(salt),
    },
    // Each section has its own IV (written before it); this one is kept for the header's shape.
    cipher: { name: "AES-GCM", iv: toBase64Url(crypto.getRandomValues(new Uint8Array(12))) },
    sections: files.length + 1,
  };
  const head = utf8(EXPORT_MAGIC + JSON.stringify(header) + "\n");
  const key = await keyFrom(passphrase, salt, EXPORT_ITERATIONS);
  const parts: BlobPart[] = [head];
  const seal = async (index: number, plain: Uint8Array<ArrayBuffer>) => {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: sectionData(head, index) },
        key,
        plain,
      ),
    );
    const prefix = new Uint8Array(16);
    new DataView(prefix.buffer).setUint32(0, sealed.length);
    prefix.set(iv, 4);
    parts.push(prefix, sealed);
  };
  const manifest = files.map((f) => ({ id: f.id, status: f.status }));
  await seal(
    0,
    await transform(
      utf8(JSON.stringify({ owner, exportedAt: now, rows, files: manifest })),
      new CompressionStream("gzip"),
    ),
  );
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  options.onProgress?.(0, total);
  for (const [i, f] of files.entries()) {
    const bytes = await f.read();
    if (!bytes || bytes.length !== f.size) {
      throw new HistoryFileError(`A file (${f.id}) could not be read: try the export again.`);
    }
    await seal(i + 1, bytes);
    done += f.size;
    options.onProgress?.(done, total);
  }
  return new Blob(parts, { type: "application/octet-stream" });
}

/** {@link exportHistoryBlob} as bytes. */
export async function exportHistory(
  owner: string,
  rows: readonly MessageRow[],
  passphrase: string,
  options: ExportOptions | number = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const opts = typeof options === "number" ? { now: options } : options;
  const blob = await exportHistoryBlob(owner, rows, passphrase, opts);
  return new Uint8Array(await blob.arrayBuffer());
}

const NOT_A_FILE = "This is not a P2P-Chat history file (export one from the settings).";

function readHeader(file: Uint8Array): { header: Header; headLength: number; version: 1 | 2 } {
  const startsWith = (magic: Uint8Array) =>
    file.length >= magic.length && magic.every((b, i) => file[i] === b);
  const version = startsWith(utf8(EXPORT_MAGIC)) ? 2 : startsWith(utf8(EXPORT_MAGIC_V1)) ? 1 : 0;
  if (version === 0) throw new HistoryFileError(NOT_A_FILE);
  const magicLength = EXPORT_MAGIC.length;
  const end = file.indexOf(10, magicLength);
  if (end < 0 || end - magicLength > 4096) throw new HistoryFileError(NOT_A_FILE);
  try {
    const h = JSON.parse(fromUtf8(file.subarray(magicLength, end))) as Header;
    const ok = typeof h.owner === "string" && isValidUsername(h.owner) &&
      Number.isSafeInteger(h.exportedAt) && h.kdf?.name === "PBKDF2" &&
      h.kdf.hash === "SHA-256" && Number.isSafeInteger(h.kdf.iterations) &&
      h.kdf.iterations >= 100_000 && h.kdf.iterations <= 10_000_000 &&
      typeof h.kdf.salt === "string" && h.cipher?.name === "AES-GCM" &&
      typeof h.cipher.iv === "string" &&
      (version === 1 ||
        (Number.isSafeInteger(h.sections) && h.sections! >= 1 &&
          h.sections! <= MAX_IMPORT_FILES + 1));
    if (!ok) throw new Error("bad header");
    return { header: h, headLength: end + 1, version };
  } catch {
    throw new HistoryFileError(NOT_A_FILE);
  }
}

/** Who exported `file` and when (readable without the passphrase). */
export function exportInfo(file: Uint8Array): { owner: string; exportedAt: number } {
  const { header } = readHeader(file);
  return { owner: header.owner, exportedAt: header.exportedAt };
}

const WRONG_PASSPHRASE =
  "The passphrase is wrong, or the file is damaged: check the passphrase and try again.";

/** The sections of a version-2 file, still sealed; throws if they are not exactly `count`. */
function splitSections(
  file: Uint8Array<ArrayBuffer>,
  at: number,
  count: number,
): Array<{ iv: Uint8Array<ArrayBuffer>; sealed: Uint8Array<ArrayBuffer> }> {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const out = [];
  while (at < file.length) {
    if (out.length === count || at + 16 > file.length) throw new HistoryFileError(WRONG_PASSPHRASE);
    const length = view.getUint32(at);
    if (length < 16 || at + 16 + length > file.length) {
      throw new HistoryFileError(WRONG_PASSPHRASE);
    }
    out.push({
      iv: file.slice(at + 4, at + 16),
      sealed: file.subarray(at + 16, at + 16 + length),
    });
    at += 16 + length;
  }
  if (out.length !== count) throw new HistoryFileError(WRONG_PASSPHRASE);
  return out;
}

/**
 * The rows of an export file, for `owner`'s history (its files are checked but dropped: see
 * {@link openHistoryFile}).
 */
export async function importHistoryFile(
  file: Uint8Array<ArrayBuffer>,
  passphrase: string,
  owner: string,
): Promise<MessageRow[]> {
  return (await openHistoryFile(file, passphrase, owner)).rows;
}

/**
 * The rows and files of an export file, for `owner`'s history, all checked. Throws a
 * {@link HistoryFileError} saying what is wrong: not such a file, another user's history, a wrong
 * passphrase or damage, a row or file that does not belong.
 */
export async function openHistoryFile(
  file: Uint8Array<ArrayBuffer>,
  passphrase: string,
  owner: string,
): Promise<OpenedHistory> {
  const { header, headLength, version } = readHeader(file);
  if (header.owner !== owner) {
    throw new HistoryFileError(
      `This file holds ${header.owner}'s history: log in as ${header.owner} to import it.`,
    );
  }
  const head = file.subarray(0, headLength);
  const sections = version === 1
    ? [{ iv: fromBase64Url(header.cipher.iv), sealed: file.subarray(headLength) }]
    : splitSections(file, headLength, header.sections!);
  let key: CryptoKey;
  try {
    key = await keyFrom(passphrase, fromBase64Url(header.kdf.salt), header.kdf.iterations);
  } catch {
    throw new HistoryFileError(NOT_A_FILE);
  }
  const open = async (index: number) => {
    const { iv, sealed } = sections[index]!;
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv, additionalData: version === 1 ? head : sectionData(head, index) },
          key,
          sealed,
        ),
      );
    } catch {
      throw new HistoryFileError(WRONG_PASSPHRASE);
    }
  };
  const plain = await open(0);
  let rows: MessageRow[];
  let manifest: Array<{ id: string; status: ExportedFileStatus }>;
  try {
    const json = await readAtMost(
      new Blob([plain]).stream().pipeThrough(new DecompressionStream("gzip")),
      MAX_HISTORY_JSON_BYTES,
    );
    if (!json) throw new Error("the history is too large");
    const body = readObject(JSON.parse(fromUtf8(json)), "");
    if (body.owner !== owner) throw new Error("owner differs from the header");
    rows = readArray(body, "rows", "", MAX_IMPORT_ROWS, (v, p) => readRow(v, p, owner));
    manifest = version === 1 ? [] : readArray(body, "files", "", MAX_IMPORT_FILES, (v, p) => {
      const o = readObject(v, p);
      const status = readString(o, "status", p, { max: 16 });
      if (status !== "complete" && status !== "sending") throw new Error(`${p}.status`);
      return { id: readString(o, "id", p, { max: 64 }), status };
    });
  } catch (err) {
    throw new HistoryFileError(
      `The file's contents are not a valid history (${
        err instanceof Error ? err.message : err
      }): nothing was imported.`,
    );
  }
  if (manifest.length !== sections.length - 1) {
    throw new HistoryFileError(`The file's list of files does not match it: nothing was imported.`);
  }
  const byId = new Map(rows.map((r) => [r.id, r]));
  const seen = new Set<string>();
  const files: ImportedFile[] = [];
  for (const [i, entry] of manifest.entries()) {
    const row = byId.get(entry.id);
    const bad = (why: string) =>
      new HistoryFileError(`A file of this history ${why}: nothing was imported.`);
    if (!row?.attachment) throw bad(`(${entry.id}) belongs to no message of it`);
    if (seen.has(entry.id)) throw bad(`(${entry.id}) is in it twice`);
    seen.add(entry.id);
    const meta = validateFileMeta(JSON.parse(row.attachment));
    if (sections[i + 1]!.sealed.length !== meta.size + 16) {
      throw bad(`("${meta.name}") is not the size its message says`);
    }
    const bytes = await open(i + 1);
    const sha = toBase64Url(await crypto.subtle.digest("SHA-256", bytes));
    if (sha !== meta.sha256) throw bad(`("${meta.name}") is not the content its message says`);
    if (entry.status === "sending" && row.sender !== owner) {
      throw bad(`("${meta.name}") is marked as being sent, but ${owner} did not send it`);
    }
    files.push({ id: entry.id, status: entry.status, bytes });
  }
  return { rows, files };
}
