import { assert, assertEquals } from "./testing/assert.ts";
import type { MessageRow } from "./history.ts";
import {
  exportHistory,
  exportInfo,
  HistoryFileError,
  importHistoryFile,
} from "./history_export.ts";

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
