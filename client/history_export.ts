/**
 * Export and import of a user's whole local history as one file encrypted with a passphrase
 * (a backup the user keeps, or takes to a device the history cannot be handed over to).
 *
 * File layout: the line {@link EXPORT_MAGIC}, one line of JSON header (owner, export time, key
 * derivation and cipher parameters), then the ciphertext. The key is PBKDF2-SHA-256 of the
 * passphrase ({@link EXPORT_ITERATIONS} rounds, random 16-byte salt); the cipher is AES-256-GCM
 * with the header as additional data, so the header cannot be altered either. The plaintext is
 * the gzip-compressed JSON `{ owner, exportedAt, rows }`; every row is validated on import as a
 * hand-over row is (a file is as untrusted as a peer), and only into the same user's history.
 */
import type { MessageRow } from "./history.ts";
import { readRow } from "./handover.ts";
import { fromBase64Url, fromUtf8, toBase64Url, utf8 } from "../shared/crypto/encoding.ts";
import { readArray, readObject } from "../shared/validate.ts";
import { isValidUsername } from "../shared/username.ts";

/** First line of every export file. */
export const EXPORT_MAGIC = "P2PCHAT-HISTORY-1\n";
/** PBKDF2 rounds (OWASP's 2023 figure for PBKDF2-HMAC-SHA256). */
export const EXPORT_ITERATIONS = 600_000;
/** Shortest passphrase accepted for an export. */
export const MIN_PASSPHRASE_LENGTH = 8;
/** Most rows a file may hold on import. */
export const MAX_IMPORT_ROWS = 2_000_000;

/** A file that cannot be imported, with what the user should do. */
export class HistoryFileError extends Error {
  override name = "HistoryFileError";
}

interface Header {
  owner: string;
  exportedAt: number;
  kdf: { name: "PBKDF2"; hash: "SHA-256"; iterations: number; salt: string };
  cipher: { name: "AES-GCM"; iv: string };
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

/** The export file of `owner`'s `rows`, encrypted with `passphrase`. */
export async function exportHistory(
  owner: string,
  rows: readonly MessageRow[],
  passphrase: string,
  now = Date.now(),
): Promise<Uint8Array<ArrayBuffer>> {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new HistoryFileError(
      `Choose a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters.`,
    );
  }
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const header: Header = {
    owner,
    exportedAt: now,
    kdf: {
      name: "PBKDF2",
      hash: "SHA-256",
      iterations: EXPORT_ITERATIONS,
      salt: toBase64Url(salt),
    },
    cipher: { name: "AES-GCM", iv: toBase64Url(iv) },
  };
  const head = utf8(EXPORT_MAGIC + JSON.stringify(header) + "\n");
  const plain = await transform(
    utf8(JSON.stringify({ owner, exportedAt: now, rows })),
    new CompressionStream("gzip"),
  );
  const key = await keyFrom(passphrase, salt, EXPORT_ITERATIONS);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: head }, key, plain),
  );
  const file = new Uint8Array(head.length + sealed.length);
  file.set(head);
  file.set(sealed, head.length);
  return file;
}

const NOT_A_FILE = "This is not a P2P-Chat history file (export one from the settings).";

function readHeader(file: Uint8Array): { header: Header; headLength: number } {
  const magic = utf8(EXPORT_MAGIC);
  if (file.length < magic.length || magic.some((b, i) => file[i] !== b)) {
    throw new HistoryFileError(NOT_A_FILE);
  }
  const end = file.indexOf(10, magic.length);
  if (end < 0 || end - magic.length > 4096) throw new HistoryFileError(NOT_A_FILE);
  try {
    const h = JSON.parse(fromUtf8(file.subarray(magic.length, end))) as Header;
    const ok = typeof h.owner === "string" && isValidUsername(h.owner) &&
      Number.isSafeInteger(h.exportedAt) && h.kdf?.name === "PBKDF2" &&
      h.kdf.hash === "SHA-256" && Number.isSafeInteger(h.kdf.iterations) &&
      h.kdf.iterations >= 100_000 && h.kdf.iterations <= 10_000_000 &&
      typeof h.kdf.salt === "string" && h.cipher?.name === "AES-GCM" &&
      typeof h.cipher.iv === "string";
    if (!ok) throw new Error("bad header");
    return { header: h, headLength: end + 1 };
  } catch {
    throw new HistoryFileError(NOT_A_FILE);
  }
}

/** Who exported `file` and when (readable without the passphrase). */
export function exportInfo(file: Uint8Array): { owner: string; exportedAt: number } {
  const { header } = readHeader(file);
  return { owner: header.owner, exportedAt: header.exportedAt };
}

/**
 * The rows of an export file, for `owner`'s history. Throws a {@link HistoryFileError} saying
 * what is wrong: not such a file, another user's history, a wrong passphrase or damage.
 */
export async function importHistoryFile(
  file: Uint8Array<ArrayBuffer>,
  passphrase: string,
  owner: string,
): Promise<MessageRow[]> {
  const { header, headLength } = readHeader(file);
  if (header.owner !== owner) {
    throw new HistoryFileError(
      `This file holds ${header.owner}'s history: log in as ${header.owner} to import it.`,
    );
  }
  let plain: Uint8Array<ArrayBuffer>;
  try {
    const key = await keyFrom(passphrase, fromBase64Url(header.kdf.salt), header.kdf.iterations);
    plain = new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: fromBase64Url(header.cipher.iv),
          additionalData: file.subarray(0, headLength),
        },
        key,
        file.subarray(headLength),
      ),
    );
  } catch {
    throw new HistoryFileError(
      "The passphrase is wrong, or the file is damaged: check the passphrase and try again.",
    );
  }
  try {
    const body = readObject(
      JSON.parse(fromUtf8(await transform(plain, new DecompressionStream("gzip")))),
      "",
    );
    if (body.owner !== owner) throw new Error("owner differs from the header");
    return readArray(body, "rows", "", MAX_IMPORT_ROWS, (v, p) => readRow(v, p, owner));
  } catch (err) {
    throw new HistoryFileError(
      `The file's contents are not a valid history (${
        err instanceof Error ? err.message : err
      }): nothing was imported.`,
    );
  }
}
