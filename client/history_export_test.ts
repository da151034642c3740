import { assert, assertEquals } from "./testing/assert.ts";
import type { MessageRow } from "./history.ts";
import {
  type ExportedFileStatus,
  type ExportFile,
  exportHistory,
  exportInfo,
  HistoryFileError,
  importHistoryFile,
  openHistoryFile,
} from "./history_export.ts";
import { toBase64Url } from "../shared/crypto/encoding.ts";

function rows(n: number): MessageRow[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `msg-${String(i).padStart(6, "0")}`,
    peer: "bob",
    sender: i % 2 ? "alice" : "bob",
    recipient: i % 2 ? "bob" : "alice",
    sentAt: 1_000 + i,
    receivedAt: i % 2 ? null : 1_001 + i,
    text: `message ${i} ✓`,
    via: "p2p",
    status: "delivered",
  }));
}

async function rejects(p: Promise<unknown>, includes: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    assert(err instanceof HistoryFileError, `a HistoryFileError, not ${err}`);
    assert(err.message.includes(includes), `"${err.message}" should say "${includes}"`);
    return;
  }
  throw new Error(`expected a rejection saying "${includes}"`);
}

const PASS = "correct horse battery";

Deno.test("an exported history imports back whole, with the right passphrase only", async () => {
  const original = rows(1_000);
  const file = await exportHistory("alice", original, PASS, 42);
  assertEquals(exportInfo(file), { owner: "alice", exportedAt: 42 });
  assert(!new TextDecoder().decode(file).includes("message 1 "), "no text in the clear");
  assertEquals(await importHistoryFile(file, PASS, "alice"), original);
  await rejects(importHistoryFile(file, "wrong horse battery", "alice"), "passphrase is wrong");
});

Deno.test("another user's file, a damaged file or not a history file is refused, saying why", async () => {
  const file = await exportHistory("alice", rows(3), PASS);
  await rejects(importHistoryFile(file, PASS, "bob"), "log in as alice");
  const flipped = file.slice();
  flipped[flipped.length - 5]! ^= 1;
  await rejects(importHistoryFile(flipped, PASS, "alice"), "damaged");
  // The header is bound to the ciphertext: changing the owner in it is noticed too.
  const text = new TextDecoder().decode(file.subarray(0, 200));
  const renamed = file.slice();
  renamed.set(new TextEncoder().encode('"owner":"carol"'), text.indexOf('"owner":"alice"'));
  await rejects(importHistoryFile(renamed, PASS, "carol"), "damaged");
  await rejects(importHistoryFile(new TextEncoder().encode("hello"), PASS, "alice"), "not a P2P");
  await rejects(importHistoryFile(new Uint8Array(0), PASS, "alice"), "not a P2P");
});

Deno.test("a well-encrypted file with a bad row imports nothing", async () => {
  const bad = rows(3);
  bad[1] = { ...bad[1]!, sender: "mallory", recipient: "bob" }; // not a conversation of alice
  const file = await exportHistory("alice", bad, PASS);
  await rejects(importHistoryFile(file, PASS, "alice"), "nothing was imported");
});

Deno.test("a short passphrase is refused at export", async () => {
  try {
    await exportHistory("alice", rows(1), "short");
    throw new Error("accepted");
  } catch (err) {
    assert(err instanceof HistoryFileError && err.message.includes("at least 8"));
  }
});

/** A row of alice's with a file of `bytes` attached (its meta as the chat message carries it). */
async function fileRow(
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  sender = "bob",
  size = bytes.length,
): Promise<MessageRow> {
  const sha = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const meta = {
    name: `${id}.bin`,
    size,
    mime: "application/octet-stream",
    sha256: toBase64Url(sha),
    key: toBase64Url(new Uint8Array(32)),
  };
  return {
    id,
    peer: "bob",
    sender,
    recipient: sender === "bob" ? "alice" : "bob",
    sentAt: 5_000,
    receivedAt: null,
    text: meta.name,
    via: "p2p",
    status: "delivered",
    attachment: JSON.stringify(meta),
  };
}

function carried(
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  status: ExportedFileStatus = "complete",
): ExportFile {
  return { id, size: bytes.length, status, read: () => Promise.resolve(bytes) };
}

const random = (n: number) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) crypto.getRandomValues(out.subarray(i, i + 65_536));
  return out;
};

Deno.test("files go with the history, encrypted, and come back byte for byte with their messages", async () => {
  const photo = random(300_000);
  const doc = random(10);
  const empty = new Uint8Array(0);
  const original = [
    ...rows(5),
    await fileRow("file-photo", photo),
    await fileRow("file-doc-1", doc, "alice"),
    await fileRow("file-empty", empty),
  ];
  const progress: Array<[number, number]> = [];
  const file = await exportHistory("alice", original, PASS, {
    files: [
      carried("file-photo", photo),
      carried("file-doc-1", doc, "sending"),
      carried("file-empty", empty),
    ],
    onProgress: (done, total) => progress.push([done, total]),
  });
  assertEquals(progress.at(-1), [300_010, 300_010]);
  const head = new TextDecoder().decode(file.subarray(0, 100));
  assert(head.startsWith("P2PCHAT-HISTORY-2\n"), head);
  const opened = await openHistoryFile(file, PASS, "alice");
  assertEquals(opened.rows, original, "the attachments come with their rows");
  assertEquals(opened.files.map((f) => [f.id, f.status, f.bytes]), [
    ["file-photo", "complete", photo],
    ["file-doc-1", "sending", doc],
    ["file-empty", "complete", empty],
  ]);
  await rejects(openHistoryFile(file, "wrong horse battery", "alice"), "passphrase is wrong");
  // Cut short, a section lost or two swapped: noticed.
  await rejects(openHistoryFile(file.slice(0, file.length - 20), PASS, "alice"), "damaged");
  await rejects(openHistoryFile(file.slice(0, file.length - 16), PASS, "alice"), "damaged");
});

Deno.test("a file that is not what its message says, or belongs to none, imports nothing", async () => {
  const bytes = random(1_000);
  const msg = await fileRow("file-00001", bytes);
  const other = random(1_000);
  const cases: Array<[string, MessageRow[], ExportFile[], string]> = [
    ["another content", [msg], [carried("file-00001", other)], "not the content its message says"],
    ["no message", [msg, ...rows(1)], [carried("msg-000000", other)], "belongs to no message"],
    ["twice", [msg], [carried("file-00001", bytes), carried("file-00001", bytes)], "twice"],
    ["another size", [await fileRow("file-00001", bytes, "bob", 999)], [
      carried("file-00001", bytes),
    ], "not the size"],
    ["bob's as being sent", [msg], [carried("file-00001", bytes, "sending")], "did not send it"],
  ];
  for (const [what, rowsOf, files, says] of cases) {
    const file = await exportHistory("alice", rowsOf, PASS, { files });
    try {
      await openHistoryFile(file, PASS, "alice");
      throw new Error(`${what}: accepted`);
    } catch (err) {
      assert(err instanceof HistoryFileError, `${what}: ${err}`);
      assert(
        err.message.includes(says) && err.message.includes("nothing was imported"),
        `${what}: ${err.message}`,
      );
    }
  }
});

Deno.test("a file of the first version (history only) still imports", async () => {
  // Made as version 1 did: one AES-GCM body, the header line as additional data.
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const header = {
    owner: "alice",
    exportedAt: 7,
    kdf: { name: "PBKDF2", hash: "SHA-256", iterations: 100_000, salt: toBase64Url(salt) },
    cipher: { name: "AES-GCM", iv: toBase64Url(iv) },
  };
  const head = new TextEncoder().encode(`P2PCHAT-HISTORY-1\n${JSON.stringify(header)}\n`);
  const body = new TextEncoder().encode(
    JSON.stringify({ owner: "alice", exportedAt: 7, rows: rows(3) }),
  );
  const gz = new Uint8Array(
    await new Response(new Blob([body]).stream().pipeThrough(new CompressionStream("gzip")))
      .arrayBuffer(),
  );
  const base = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(PASS),
    "PBKDF2",
    false,
    ["deriveKey"],
  );
  const key = await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: 100_000 },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt"],
  );
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: head }, key, gz),
  );
  const file = new Uint8Array(head.length + sealed.length);
  file.set(head);
  file.set(sealed, head.length);
  assertEquals(await openHistoryFile(file, PASS, "alice"), { rows: rows(3), files: [] });
});
