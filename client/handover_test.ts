import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import {
  filePieceCount,
  HANDOVER_FILE_PIECE,
  type HandoverFiles,
  type HandoverKeys,
  type HandoverOutcome,
  HandoverReceiveJob,
  HandoverSendJob,
  parseHandoverRows,
  SEND_WINDOW,
} from "./handover.ts";
import type { ExportFile, ImportedFile } from "./history_export.ts";
import { MAX_BUFFERED_AMOUNT } from "./peer_link.ts";
import { createMemoryRowStores, History, type MessageRow } from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import {
  BatchTooLargeError,
  MAX_BATCH_PAYLOAD_BYTES,
  openBatch,
  sealBatch,
  type SealedBatch,
  TamperedEnvelopeError,
  toBase64Url,
  type UserKeyPairs,
} from "../shared/crypto/mod.ts";
import { ProtocolError } from "../shared/mod.ts";
import { handoverTrust, keyIdOf, type PinRecord } from "./trust.ts";

const sql = await loadSqlJs(
  decodeURIComponent(
    new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
  ),
);

function keysFrom(pairs: UserKeyPairs): HandoverKeys {
  return {
    signing: pairs.signing.privateKey,
    verify: pairs.signing.publicKey,
    decrypt: pairs.encryption.privateKey,
    encrypt: pairs.encryption.publicKey,
  };
}

/** Row `i` of alice's history: alternately to and from bob, in time order. */
function row(i: number, text = `message ${i}`): MessageRow {
  const mine = i % 2 === 0;
  return {
    id: `msg-${String(i).padStart(6, "0")}`,
    peer: "bob",
    sender: mine ? "alice" : "bob",
    recipient: mine ? "bob" : "alice",
    sentAt: 1_700_000_000_000 + i,
    receivedAt: mine ? null : 1_700_000_000_500 + i,
    text,
    via: "p2p",
    status: "delivered",
  };
}

async function rejects(fn: () => Promise<unknown>, kind: new (...a: never[]) => Error) {
  try {
    await fn();
  } catch (err) {
    assert(err instanceof kind, `expected ${kind.name}, got ${err}`);
    return;
  }
  throw new Error(`expected ${kind.name}, nothing was thrown`);
}

Deno.test("compression lets one sealed batch carry 2,000 chat rows, still under 64 KiB", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = Array.from({ length: 2_000 }, (_, i) => row(i, `see you at ${i % 24}:00 then`));
  const payload = JSON.stringify(rows);
  assert(new TextEncoder().encode(payload).length > 4 * MAX_BATCH_PAYLOAD_BYTES);
  const batch = await sealBatch(
    { owner: "alice", nonce: "n".repeat(24), seq: 0, total: 2_000, final: true },
    payload,
    alice.signing,
    alice.encrypt,
  );
  const wire = JSON.stringify({ v: 1, type: "handover_batch", batch });
  assert(wire.length <= MAX_BUFFERED_AMOUNT, `${wire.length} bytes on the wire`);
  assertEquals(await openBatch(batch, alice.decrypt, alice.verify), payload);
});

Deno.test("a payload that does not compress under the bound is refused, to be split", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const noise = toBase64Url(crypto.getRandomValues(new Uint8Array(60_000)));
  const head = { owner: "alice", nonce: "n".repeat(24), seq: 0, total: 1, final: true };
  await rejects(
    () => sealBatch(head, JSON.stringify([row(0, noise)]), alice.signing, alice.encrypt),
    BatchTooLargeError,
  );
});

Deno.test("a batch from another key, or altered in any field, is rejected", async () => {
  const keys = await testKeys();
  const alice = keysFrom(keys.alice);
  const eve = keysFrom(keys.eve);
  const head = { owner: "alice", nonce: "abcdefghijklmnop", seq: 3, total: 10, final: false };
  const payload = JSON.stringify([row(1)]);
  const good = await sealBatch(head, payload, alice.signing, alice.encrypt);
  assertEquals(await openBatch(good, alice.decrypt, alice.verify), payload);

  // Eve knows alice's public encryption key but signs with her own.
  const forged = await sealBatch(head, payload, eve.signing, alice.encrypt);
  await rejects(() => openBatch(forged, alice.decrypt, alice.verify), TamperedEnvelopeError);

  const altered: SealedBatch[] = [
    { ...good, seq: 4 },
    { ...good, total: 11 },
    { ...good, final: true },
    { ...good, nonce: "bcdefghijklmnopq" },
    { ...good, owner: "eve" },
    { ...good, ciphertext: flip(good.ciphertext) },
    { ...good, key: flip(good.key) },
  ];
  for (const batch of altered) {
    await rejects(() => openBatch(batch, alice.decrypt, alice.verify), TamperedEnvelopeError);
  }
});

/** The same base64url text with its first character changed. */
function flip(text: string): string {
  return (text[0] === "A" ? "B" : "A") + text.slice(1);
}

Deno.test("rows of someone else's conversations are refused", () => {
  assertEquals(parseHandoverRows(JSON.stringify([row(0), row(1)]), "alice").length, 2);
  const bad: Array<Partial<MessageRow>> = [
    { sender: "carol", recipient: "bob" }, // between two others
    { peer: "alice", sender: "alice", recipient: "alice" }, // to himself
    { peer: "carol" }, // peer is not the other party
    { status: "lost" as MessageRow["status"] },
    { text: "" },
  ];
  for (const change of bad) {
    let threw = false;
    try {
      parseHandoverRows(JSON.stringify([{ ...row(0), ...change }]), "alice");
    } catch (err) {
      threw = err instanceof ProtocolError;
    }
    assert(threw, `accepted ${JSON.stringify(change)}`);
  }
});

Deno.test("importing rows is idempotent by id and only moves a status forward", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  try {
    // Already here from the mailbox, and a message of this device still pending.
    await h.insert({ ...row(1), via: "mailbox" });
    await h.insert({ ...row(2), status: "sent", via: "mailbox" });
    const incoming = [row(0), row(1), { ...row(2), status: "delivered" as const }, row(3)];
    let fresh = 0;
    for (const r of incoming) if (await h.importRow(r)) fresh++;
    assertEquals(fresh, 2);
    for (const r of incoming) assertEquals(await h.importRow(r), false);
    await h.importRow({ ...row(3), status: "sending" });
    assertEquals(h.count(), 4);
    assertEquals(h.list("bob").map((r) => r.id), [0, 1, 2, 3].map((i) => row(i).id));
    assertEquals(h.get(row(1).id)?.via, "mailbox", "an existing row keeps its path");
    assertEquals(h.get(row(2).id)?.status, "delivered", "a status moves forward");
    assertEquals(h.get(row(3).id)?.status, "delivered", "and never back");
  } finally {
    h.close();
  }
  // Durable: a reopened history has the same rows.
  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.count(), 4);
  again.close();
});

/** A sender and a receiver job wired back to back, as over an open data channel. */
function pipe(
  sender: {
    owner: string;
    keys: HandoverKeys;
    rows: MessageRow[];
    trust?: string;
    files?: HandoverFiles;
  },
  receiver: { owner: string; keys: HandoverKeys },
  tamper: (text: string) => string = (t) => t,
) {
  const stored: MessageRow[] = [];
  const files: ImportedFile[] = [];
  const wire: string[] = [];
  const trusts: PinRecord[][] = [];
  const progress: Array<[number, number]> = [];
  let maxInFlight = 0;
  let sentBatches = 0;
  let acked = 0;
  /** The channel: a message in transit when it drops is lost, as on a closed data channel. */
  const channel = { isUp: true, epoch: 0 };
  const deliver = (fn: () => void) => {
    const epoch = channel.epoch;
    setTimeout(() => channel.isUp && channel.epoch === epoch && fn(), 0);
  };
  const link: { rx?: HandoverReceiveJob } = {};
  /** Acknowledgements held back (see `holdAcks`), delivered by `releaseAcks`. */
  let heldAcks: (() => void)[] | undefined;
  const tx = new HandoverSendJob(
    sender.owner,
    sender.keys,
    sender.rows,
    {
      send(text) {
        wire.push(text);
        sentBatches++;
        maxInFlight = Math.max(maxInFlight, sentBatches - acked);
        deliver(() => link.rx!.receive(tamper(text)));
      },
    },
    sender.trust,
    undefined,
    sender.files,
  );
  const rx = link.rx = new HandoverReceiveJob(receiver.owner, receiver.keys, {
    send(text) {
      const isAck = text.includes('"handover_received"');
      const pass = () => {
        if (isAck) acked++;
        deliver(() => tx.receive(text));
      };
      if (isAck && heldAcks) heldAcks.push(pass);
      else pass();
    },
    onProgress: (done, total) => progress.push([done, total]),
    importRows(rows) {
      stored.push(...rows);
      return Promise.resolve(rows.length);
    },
    importTrust(pins) {
      trusts.push(pins);
      return Promise.resolve();
    },
    importFile(file) {
      files.push(file);
      return Promise.resolve();
    },
  });
  rx.start();
  return {
    tx,
    rx,
    stored,
    files,
    wire,
    trusts,
    progress,
    maxInFlight: () => maxInFlight,
    sentBatches: () => sentBatches,
    /** From now on the receiver's acknowledgements wait until {@link releaseAcks}. */
    holdAcks() {
      heldAcks ??= [];
    },
    /** Delivers the held acknowledgements and stops holding them. */
    releaseAcks() {
      const held = heldAcks ?? [];
      heldAcks = undefined;
      for (const pass of held) pass();
    },
    /** The channel drops: what is in transit is lost, and the sender pauses. */
    drop() {
      channel.isUp = false;
      channel.epoch++;
      tx.pause();
      sentBatches = acked;
    },
    /** A new channel opens: the receiver says hello again. */
    reopen() {
      channel.isUp = true;
      rx.start();
    },
  };
}

/** Rows with text that compresses like random words: about 2.5× rather than 20×. */
function wordyRows(n: number): MessageRow[] {
  const words = ["soon", "lunch", "train", "meeting", "ok", "see", "you", "later", "why", "now"];
  return Array.from({ length: n }, (_, i) => {
    const text = Array.from({ length: 40 }, (_, w) => words[(i * 7 + w * w * 13) % 10]).join(" ");
    return row(i, `${text} ${crypto.randomUUID()}`);
  }).reverse();
}

Deno.test("a whole history goes over in the order given, pipelined, and the signed ack ends it", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = wordyRows(3_000); // newest first, as the old device sends them
  const p = pipe({ owner: "alice", keys: alice, rows }, { owner: "alice", keys: alice });
  const [sent, received] = await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(sent, { ok: true, rows: 3_000 });
  assertEquals(received, { ok: true, rows: 3_000 });
  assertEquals(p.stored.map((r) => r.id), rows.map((r) => r.id));
  assert(p.progress.length >= 3, `several batches, got ${p.progress.length}`);
  assertEquals(p.progress.at(-1), [3_000, 3_000]);
  assert(p.maxInFlight() <= SEND_WINDOW, `at most ${SEND_WINDOW} unacknowledged`);

  // An empty history still ends with an acknowledged (empty) final batch.
  const empty = pipe({ owner: "alice", keys: alice, rows: [] }, { owner: "alice", keys: alice });
  assertEquals(await empty.tx.outcome, { ok: true, rows: 0 });
});

Deno.test("the first batch carries the pinned keys and a pending change, once per transfer (a dropped channel included)", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = wordyRows(4_000);
  const keyId = await keyIdOf({ encryption: "bob-enc", signing: "bob-sig" });
  const other = await keyIdOf({ encryption: "eve-enc", signing: "eve-sig" });
  const pins: PinRecord[] = [
    { contact: "carol", keyId: other, keys: null, pinnedAt: 5, pending: null, events: [] },
    {
      contact: "bob",
      keyId,
      keys: { encryption: "bob-enc", signing: "bob-sig" },
      pinnedAt: 10,
      pending: { keyId: other, keys: { encryption: "eve-enc", signing: "eve-sig" }, seenAt: 20 },
      events: [{ at: 20, kind: "changed" }],
    },
  ];
  const p = pipe(
    { owner: "alice", keys: alice, rows, trust: handoverTrust(pins) },
    { owner: "alice", keys: alice },
  );
  await waitFor(() => p.stored.length >= 1_000, "part of the history arrived");
  p.drop();
  p.reopen();
  await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(p.stored.length, 4_000);
  assertEquals(p.trusts.length, 1, "once per transfer, with its first batch");
  const [bob, carol] = p.trusts[0]!;
  // Ids only: the next device fetches the keys and checks them against these.
  assertEquals(bob, {
    contact: "bob",
    keyId,
    keys: null,
    pinnedAt: 10,
    pending: { keyId: other, keys: null, seenAt: 20 },
    events: [{ at: 20, kind: "changed" }],
  });
  assertEquals([carol?.contact, carol?.pending], ["carol", null]);
});

Deno.test("the sender keeps a window of batches in flight without waiting for each ack", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = wordyRows(6_000);
  const p = pipe({ owner: "alice", keys: alice, rows }, { owner: "alice", keys: alice });
  p.holdAcks();
  // With no acknowledgement arriving, it sends exactly a full window, then waits.
  await waitFor(() => p.sentBatches() >= SEND_WINDOW, "a full window of batches sent");
  assertEquals(p.sentBatches(), SEND_WINDOW, `at most ${SEND_WINDOW} unacknowledged`);
  p.releaseAcks();
  const [sent, received] = await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(sent, { ok: true, rows: 6_000 });
  assertEquals(received, { ok: true, rows: 6_000 });
});

Deno.test("a transfer whose channel drops goes on where it stopped, each row once", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = wordyRows(4_000);
  const p = pipe({ owner: "alice", keys: alice, rows }, { owner: "alice", keys: alice });
  await waitFor(() => p.stored.length >= 1_000, "part of the history arrived");
  p.drop();
  const before = p.stored.length;
  assert(before < rows.length, "dropped halfway");
  p.reopen();
  const [sent, received] = await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(sent, { ok: true, rows: 4_000 });
  assertEquals(received, { ok: true, rows: 4_000 });
  assertEquals(p.stored.map((r) => r.id), rows.map((r) => r.id), "every row once, in order");
});

Deno.test("the receiver refuses batches sealed with another key, altered, or of another transfer", async () => {
  const keys = await testKeys();
  const alice = keysFrom(keys.alice);
  const eve = keysFrom(keys.eve);
  const rows = [row(0), row(1)];

  // A device with eve's keys pretends to be alice's old device.
  const foreign = pipe({ owner: "alice", keys: eve, rows }, { owner: "alice", keys: alice });
  const [tx1, rx1] = await Promise.all([foreign.tx.outcome, foreign.rx.outcome]);
  assert(!rx1.ok && /signature/.test(rx1.reason), JSON.stringify(rx1));
  assert(!tx1.ok && /refused/.test(tx1.reason), JSON.stringify(tx1));
  assertEquals(foreign.stored, [], "nothing imported");

  // A server in the path that got into the channel changes bytes of a batch.
  const altered = pipe(
    { owner: "alice", keys: alice, rows },
    { owner: "alice", keys: alice },
    (text) => text.replace(/"ciphertext":"(.)/, (_, c) => `"ciphertext":"${c === "A" ? "B" : "A"}`),
  );
  const rx2: HandoverOutcome = await altered.rx.outcome;
  assert(!rx2.ok, "altered batch refused");
  assertEquals(altered.stored, []);

  // Or replays a batch recorded in another transfer (another nonce).
  const replay = pipe(
    { owner: "alice", keys: alice, rows },
    { owner: "alice", keys: alice },
    (text) => text.replace(/"nonce":"[^"]+"/, `"nonce":"${"r".repeat(24)}"`),
  );
  const rx3 = await replay.rx.outcome;
  assert(!rx3.ok && /another transfer/.test(rx3.reason), JSON.stringify(rx3));
  assertEquals(replay.stored, []);
});

Deno.test("the sender does not stop on an acknowledgement it cannot verify", async () => {
  const keys = await testKeys();
  const alice = keysFrom(keys.alice);
  // A receiver holding eve's signing key cannot make alice's old device stop.
  const receiverKeys = { ...alice, signing: keysFrom(keys.eve).signing };
  const p = pipe({ owner: "alice", keys: alice, rows: [row(0)] }, {
    owner: "alice",
    keys: receiverKeys,
  });
  const sent = await p.tx.outcome;
  assert(!sent.ok && /does not verify/.test(sent.reason), JSON.stringify(sent));
  await waitFor(() => p.stored.length === 1, "the row arrived all the same");
});

/** A row of alice's history announcing a file of `bytes` (as its chat message carries it). */
async function fileRow(i: number, bytes: Uint8Array<ArrayBuffer>, size = bytes.length) {
  const sha = toBase64Url(await crypto.subtle.digest("SHA-256", bytes));
  const meta = {
    name: `file-${i}.bin`,
    size,
    mime: "application/octet-stream",
    sha256: sha,
    key: toBase64Url(new Uint8Array(32)),
  };
  return { ...row(i, meta.name), attachment: JSON.stringify(meta) };
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) crypto.getRandomValues(out.subarray(i, i + 65_536));
  return out;
}

/** The old device's files: `held` by id, each carried whole, whatever rows the job lists. */
function filesOf(held: Map<string, Uint8Array<ArrayBuffer>>) {
  return (_rows: readonly MessageRow[]): Promise<ExportFile[]> =>
    Promise.resolve(
      [...held].map(([id, bytes]) => ({
        id,
        size: bytes.length,
        status: "complete" as const,
        read: () => Promise.resolve(bytes),
      })),
    );
}

Deno.test("files follow the rows in batches under 64 KiB, verified, and survive a dropped channel", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const big = randomBytes(5 * HANDOVER_FILE_PIECE + 123);
  const small = randomBytes(10);
  const rows = [
    await fileRow(2_003, big),
    ...wordyRows(2_000),
    await fileRow(1, small),
    await fileRow(3, randomBytes(50)), // not held on the old device: not carried
  ];
  const held = new Map([[rows[0]!.id, big], [rows.at(-2)!.id, small]]);
  const p = pipe(
    { owner: "alice", keys: alice, rows, files: filesOf(held) },
    { owner: "alice", keys: alice },
  );
  await waitFor(() => p.files.length >= 1, "the first file arrived");
  p.drop();
  p.reopen();
  const [sent, received] = await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(sent, { ok: true, rows: rows.length });
  assertEquals(received, { ok: true, rows: rows.length });
  assertEquals(p.stored.map((r) => r.id), rows.map((r) => r.id), "every row once");
  assertEquals(p.stored[0]!.attachment, rows[0]!.attachment, "the attachment comes with its row");
  assertEquals(p.files.map((f) => [f.id, f.status, f.bytes]), [
    [rows[0]!.id, "complete", big],
    [rows.at(-2)!.id, "complete", small],
  ]);
  assertEquals(filePieceCount(big.length), 6);
  for (const text of p.wire) {
    assert(text.length <= MAX_BUFFERED_AMOUNT, `${text.length} bytes in one message`);
  }
});

Deno.test("a file batch that does not match its message refuses the transfer, and keeps nothing of that file", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const bytes = randomBytes(2 * HANDOVER_FILE_PIECE);
  const cases: Array<[string, MessageRow[], Map<string, Uint8Array<ArrayBuffer>>, RegExp]> = [];
  const msg = await fileRow(1, bytes);
  // Other content of the same size.
  cases.push(["content", [msg], new Map([[msg.id, randomBytes(bytes.length)]]), /SHA-256/]);
  // Another size than the message says.
  const shorter = await fileRow(1, bytes, bytes.length - 1);
  cases.push(["size", [shorter], new Map([[msg.id, bytes]]), /size its message says/]);
  // A file for a message that has none.
  const plain = row(1);
  cases.push(["no message", [plain], new Map([[plain.id, bytes]]), /no message/]);
  for (const [what, rows, held, says] of cases) {
    const p = pipe(
      { owner: "alice", keys: alice, rows, files: filesOf(held) },
      { owner: "alice", keys: alice },
    );
    const rx = await p.rx.outcome;
    assert(!rx.ok && says.test(rx.reason), `${what}: ${JSON.stringify(rx)}`);
    assertEquals(p.files, [], `${what}: nothing of the file kept`);
    const tx = await p.tx.outcome;
    assert(!tx.ok && /refused/.test(tx.reason), `${what}: ${JSON.stringify(tx)}`);
  }
  // The same file twice.
  const twice = (rows: readonly MessageRow[]): Promise<ExportFile[]> =>
    filesOf(new Map([[msg.id, bytes]]))(rows).then((f) => [...f, ...f]);
  const p = pipe({ owner: "alice", keys: alice, rows: [msg], files: twice }, {
    owner: "alice",
    keys: alice,
  });
  const rx = await p.rx.outcome;
  assert(!rx.ok && /twice/.test(rx.reason), JSON.stringify(rx));
  assertEquals(p.files.length, 1, "the first copy only");
});
