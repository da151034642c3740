import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import {
  batchRows,
  type HandoverKeys,
  type HandoverOutcome,
  HandoverReceiveJob,
  HandoverSendJob,
  parseHandoverRows,
} from "./handover.ts";
import { MAX_BUFFERED_AMOUNT } from "./peer_link.ts";
import { createMemoryRowStores, History, type MessageRow } from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import {
  MAX_BATCH_PAYLOAD_BYTES,
  openBatch,
  sealBatch,
  type SealedBatch,
  TamperedEnvelopeError,
  type UserKeyPairs,
} from "../shared/crypto/mod.ts";
import { ProtocolError } from "../shared/mod.ts";

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

Deno.test("batching keeps the order, bounds bytes and rows, and always ends with a batch", () => {
  const rows = Array.from({ length: 500 }, (_, i) => row(i, "é".repeat(1000 + i)));
  const batches = batchRows(rows, 20_000, 7);
  assertEquals(batches.flat().map((r) => r.id), rows.map((r) => r.id));
  for (const b of batches) {
    assert(b.length >= 1 && b.length <= 7, `batch of ${b.length} rows`);
    const bytes = new TextEncoder().encode(JSON.stringify(b)).length;
    assert(bytes <= 20_000, `batch of ${bytes} bytes`);
  }
  assertEquals(batchRows([]), [[]]);
  assertEquals(batchRows([row(1)]).length, 1);
});

Deno.test("a full sealed batch stays under the 64 KiB the sender lets buffer", async () => {
  const alice = keysFrom((await testKeys()).alice);
  // Worst-case text for JSON: every character escaped.
  const rows = Array.from({ length: 400 }, (_, i) => row(i, '\u0001"'.repeat(1500)));
  const [first] = batchRows(rows);
  const payload = JSON.stringify(first);
  assert(new TextEncoder().encode(payload).length <= MAX_BATCH_PAYLOAD_BYTES);
  const batch = await sealBatch(
    { owner: "alice", nonce: "n".repeat(24), seq: 0, total: 400, final: false },
    payload,
    alice.signing,
    alice.encrypt,
  );
  const wire = JSON.stringify({ v: 1, type: "handover_batch", batch });
  assert(wire.length <= MAX_BUFFERED_AMOUNT, `${wire.length} bytes on the wire`);
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
  sender: { owner: string; keys: HandoverKeys; rows: MessageRow[] },
  receiver: { owner: string; keys: HandoverKeys },
  tamper: (text: string) => string = (t) => t,
) {
  const stored: MessageRow[] = [];
  const progress: Array<[number, number]> = [];
  let maxInFlight = 0;
  let inFlight = 0;
  const link: { rx?: HandoverReceiveJob } = {};
  const tx = new HandoverSendJob(sender.owner, sender.keys, sender.rows, {
    send(text) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      setTimeout(() => link.rx!.receive(tamper(text)), 0);
    },
  });
  const rx = link.rx = new HandoverReceiveJob(receiver.owner, receiver.keys, {
    send(text) {
      inFlight = 0;
      setTimeout(() => tx.receive(text), 0);
    },
    onProgress: (done, total) => progress.push([done, total]),
    importRows(rows) {
      stored.push(...rows);
      return Promise.resolve(rows.length);
    },
  });
  rx.start();
  return { tx, rx, stored, progress, maxInFlight: () => maxInFlight };
}

Deno.test("a whole history goes over in order, one batch in flight, and the signed ack ends it", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = Array.from({ length: 120 }, (_, i) => row(i, "x".repeat(900)));
  const p = pipe({ owner: "alice", keys: alice, rows }, { owner: "alice", keys: alice });
  const [sent, received] = await Promise.all([p.tx.outcome, p.rx.outcome]);
  assertEquals(sent, { ok: true, rows: 120 });
  assertEquals(received, { ok: true, rows: 120 });
  assertEquals(p.stored.map((r) => r.id), rows.map((r) => r.id));
  assert(p.progress.length >= 3, "several batches");
  assertEquals(p.progress.at(-1), [120, 120]);
  assertEquals(p.maxInFlight(), 1, "stop and wait: one batch at a time");

  // An empty history still ends with an acknowledged (empty) final batch.
  const empty = pipe({ owner: "alice", keys: alice, rows: [] }, { owner: "alice", keys: alice });
  assertEquals(await empty.tx.outcome, { ok: true, rows: 0 });
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
