import { assert, assertEquals } from "./testing/assert.ts";
import {
  chunkCount,
  FILE_CHUNK_BYTES,
  type FileFrame,
  type IncomingMail,
  type OutgoingMail,
  parsePeerMessage,
  ProtocolError,
} from "../shared/mod.ts";
import { toBase64Url } from "../shared/crypto/mod.ts";
import { createMemoryFileStore } from "./file_store.ts";
import {
  chunkMailId,
  FileTooLargeError,
  FileTransfers,
  MAIL_CHUNK_BATCH,
  ReceiveProgress,
} from "./file_transfer.ts";
import type { MessageRow } from "./history.ts";
import { ServerError } from "./session.ts";

/** Waits (polling) until `cond` holds; the deadline is generous for a busy machine. */
async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs * 4;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`Timed out: ${cond.toString().slice(0, 120)}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

Deno.test("receive bookkeeping: the first missing chunk, duplicates and out-of-range indexes", () => {
  const p = new ReceiveProgress(5);
  assertEquals(p.next, 0);
  assert(p.add(1));
  assertEquals(p.next, 0);
  assert(p.add(0));
  assertEquals(p.next, 2);
  assert(!p.add(1), "a duplicate is not counted twice");
  assertEquals(p.received, 2);
  for (const bad of [-1, 5, 1.5, NaN]) {
    let threw = false;
    try {
      p.add(bad);
    } catch (err) {
      threw = err instanceof ProtocolError;
    }
    assert(threw, `index ${bad} refused`);
  }
  p.add(4);
  p.add(3);
  assertEquals(p.next, 2);
  p.add(2);
  assert(p.isComplete);
  assertEquals(p.next, 5);
  // Resumed from what was kept.
  assertEquals(new ReceiveProgress(4, [0, 1, 3]).next, 2);
});

/** One side of a test transfer: its transfers, history, store and what it sent. */
interface Side {
  name: string;
  files: FileTransfers;
  rows: Map<string, MessageRow>;
  store: ReturnType<typeof createMemoryFileStore>;
  rejected: number;
  errors: string[];
  abort: AbortController;
  mailed: OutgoingMail[];
  /** Batches the mailbox takes before refusing with `quota_exceeded` (Infinity: no limit). */
  mailRoom: number;
}

/**
 * Two users with a data channel between them that the test can drop and re-open. Frames go
 * through the real parser; `chunkLimit` drops the channel after that many chunk frames.
 */
function pair(options: { maxBytes?: number; stallMs?: number } = {}) {
  /** Real timers when `stallMs` is given (the stall check runs), cleared by {@link settle}. */
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const link = {
    open: true,
    chunks: 0,
    chunkLimit: Infinity,
    frames: [] as string[],
    /** The channel's buffer is full once this many chunks went (the sender must wait). */
    fullAfter: Infinity,
    /** `file_have` frames cannot go (the channel is closing). */
    blockHaves: false,
    /**
     * Sides whose end of the channel does not report open yet while the other's does (WebRTC:
     * one side's channel opens first, and frames it sends arrive before the other side's opens).
     */
    opening: new Set<string>(),
    /** Times a side asked for a channel to be opened. */
    ensures: 0,
  };
  const sides: Record<string, Side> = {};
  const make = (name: string, other: string): Side => {
    const side = {
      name,
      rows: new Map<string, MessageRow>(),
      store: createMemoryFileStore(),
      rejected: 0,
      errors: [] as string[],
      abort: new AbortController(),
      mailed: [] as OutgoingMail[],
      mailRoom: Infinity,
    } as Side;
    const deliver = (text: string) => {
      const frame = parsePeerMessage(text) as FileFrame;
      queueMicrotask(() => void sides[other]!.files.receive(name, frame, "p2p"));
    };
    side.files = new FileTransfers({
      me: name,
      history: { get: (id) => side.rows.get(id) ?? null },
      store: side.store,
      links: {
        isOpen: () => link.open && !link.opening.has(name),
        ensure: () => void link.ensures++,
        send(_remote, text) {
          if (!link.open || link.opening.has(name)) return false;
          if (link.blockHaves && text.includes('"file_have"')) return false;
          if (text.includes('"file_chunk"')) {
            if (link.chunks >= link.chunkLimit) {
              link.open = false;
              return false;
            }
            link.chunks++;
          }
          link.frames.push(text);
          deliver(text);
          return true;
        },
        bufferedAmount: () => (link.chunks >= link.fullAfter ? 1e9 : 0),
        drained: () => new Promise((r) => setTimeout(r, 1)),
      },
      mailSend(_peer, mail) {
        if (side.mailRoom <= 0) {
          return Promise.reject(
            new ServerError("quota_exceeded", `The mailbox of "${other}" already holds 1.0 MB`),
          );
        }
        side.mailRoom--;
        side.mailed.push(...mail);
        return Promise.resolve();
      },
      control: (_peer, frame) => link.open && deliver(JSON.stringify(frame)),
      isOnline: () => true,
      maxBytes: () => options.maxBytes ?? 25 * 1024 * 1024,
      onError: (err) => side.errors.push(String(err)),
      onRejected: () => side.rejected++,
      setTimeout: options.stallMs === undefined ? () => 0 : (fn, ms) => {
        const id = setTimeout(() => {
          timers.delete(id);
          fn();
        }, ms);
        timers.add(id);
        return id;
      },
      ...(options.stallMs === undefined ? {} : { stallMs: options.stallMs }),
    }, side.abort.signal);
    return side;
  };
  sides.alice = make("alice", "bob");
  sides.bob = make("bob", "alice");
  return { alice: sides.alice!, bob: sides.bob!, link, timers };
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** Alice announces `bytes` to bob: the rows both histories would hold. */
async function announce(
  t: ReturnType<typeof pair>,
  id: string,
  bytes: Uint8Array<ArrayBuffer>,
  via: MessageRow["via"] = "p2p",
) {
  const meta = await t.alice.files.prepare(id, "bob", { name: "data.bin", type: "", bytes });
  const row: MessageRow = {
    id,
    peer: "bob",
    sender: "alice",
    recipient: "bob",
    sentAt: 1_000,
    receivedAt: null,
    text: meta.name,
    via,
    status: "sent",
    attachment: JSON.stringify(meta),
  };
  t.alice.rows.set(id, row);
  t.bob.rows.set(id, { ...row, peer: "alice", receivedAt: 1_001, status: "delivered" });
  return meta;
}

async function sameBytes(a: Uint8Array | null, b: Uint8Array): Promise<boolean> {
  if (!a) return false;
  const [x, y] = await Promise.all([
    crypto.subtle.digest("SHA-256", new Uint8Array(a)),
    crypto.subtle.digest("SHA-256", new Uint8Array(b)),
  ]);
  return toBase64Url(x) === toBase64Url(y);
}

function settle(t: ReturnType<typeof pair>) {
  t.alice.abort.abort();
  t.bob.abort.abort();
  for (const id of t.timers) clearTimeout(id);
}

Deno.test("a file goes over the channel and arrives byte-identical, verified", async () => {
  const t = pair();
  const bytes = randomBytes(5 * FILE_CHUNK_BYTES + 123);
  await announce(t, "file-0000001", bytes);
  await t.bob.files.offered("alice", "file-0000001");
  await until(async () => (await t.bob.files.content("file-0000001")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000001"), bytes));
  assertEquals((await t.bob.store.getState("file-0000001"))?.status, "complete");
  await until(() => t.alice.files.progress.value["file-0000001"]?.status === "complete", 2_000);
  assertEquals(t.bob.rejected, 0);
  // Received parts are gone once the file is whole.
  assertEquals((await t.bob.store.parts("file-0000001")).size, 0);
  settle(t);
});

Deno.test("a dropped channel: the transfer resumes from the first missing chunk, not from zero", async () => {
  const t = pair();
  const bytes = randomBytes(40 * FILE_CHUNK_BYTES);
  const count = chunkCount(bytes.length);
  await announce(t, "file-0000002", bytes);
  t.link.chunkLimit = 17;
  await t.bob.files.offered("alice", "file-0000002");
  await until(() => !t.link.open, 5_000);
  await t.alice.files.channelClosed("bob");
  await t.bob.files.channelClosed("alice");
  // The receiver keeps what it has.
  await until(async () => (await t.bob.store.parts("file-0000002")).size === 17, 2_000);
  t.link.chunkLimit = Infinity;
  t.link.open = true;
  await t.alice.files.channelOpened("bob");
  await t.bob.files.channelOpened("alice");
  await until(async () => (await t.bob.files.content("file-0000002")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000002"), bytes));
  await until(() => t.alice.files.progress.value["file-0000002"]?.status === "complete", 2_000);
  const p = t.alice.files.progress.value["file-0000002"]!;
  assertEquals(p.resumedFrom, 17);
  assertEquals(p.lastRunChunks, count - 17);
  assertEquals(p.sentChunks, count, "no chunk sent twice");
  settle(t);
});

Deno.test("hostile chunk frames are dropped: out of range, wrong length, forged, unknown file or sender", async () => {
  const t = pair();
  const bytes = randomBytes(2 * FILE_CHUNK_BYTES + 10);
  await announce(t, "file-0000003", bytes);
  t.link.open = false; // nothing from alice: only the frames below reach bob
  const chunk = (id: string, index: number, data: Uint8Array) =>
    ({ v: 1, type: "file_chunk", id, index, data: toBase64Url(data) }) as const;
  const attempts: Array<[string, FileFrame]> = [
    ["alice", chunk("file-0000003", 3, new Uint8Array(26))], // beyond the 3 chunks
    ["alice", chunk("file-0000003", 2, new Uint8Array(27))], // last chunk is 10 + 16 bytes
    ["alice", chunk("file-0000003", 0, new Uint8Array(FILE_CHUNK_BYTES + 16))], // not the key
    ["alice", chunk("file-9999999", 0, new Uint8Array(26))], // never announced
    ["mallory", chunk("file-0000003", 2, new Uint8Array(26))], // not mallory's file
    ["mallory", { v: 1, type: "file_have", id: "file-0000003", next: 0 }],
    ["alice", { v: 1, type: "file_have", id: "file-0000003", next: 1 }], // bob sends nothing
  ];
  for (const [from, frame] of attempts) await t.bob.files.receive(from, frame, "p2p");
  assertEquals(t.bob.rejected, attempts.length);
  assertEquals(t.bob.store.partWrites, 0, "nothing stored");
  assertEquals(await t.bob.files.content("file-0000003"), null);
  // The parser itself refuses malformed frames.
  for (
    const bad of [
      { v: 1, type: "file_chunk", id: "file-0000003", index: -1, data: "AA" },
      { v: 1, type: "file_chunk", id: "file-0000003", index: 0, data: "A".repeat(20_000) },
      { v: 1, type: "file_chunk", id: "../x", index: 0, data: "AA" },
      { v: 1, type: "file_chunk", id: "file-0000003", index: 0, data: "not base64!" },
      { v: 1, type: "file_have", id: "file-0000003", next: 1.5 },
    ]
  ) {
    let threw = false;
    try {
      parsePeerMessage(JSON.stringify(bad));
    } catch (err) {
      threw = err instanceof ProtocolError;
    }
    assert(threw, `refused: ${JSON.stringify(bad).slice(0, 80)}`);
  }
  settle(t);
});

Deno.test("content that does not match the announced SHA-256 shows as damaged, never as the file", async () => {
  const t = pair();
  const bytes = randomBytes(FILE_CHUNK_BYTES + 5);
  const meta = await announce(t, "file-0000004", bytes);
  // The (signed) announcement names other content than the chunks carry.
  const row = t.bob.rows.get("file-0000004")!;
  const other = toBase64Url(await crypto.subtle.digest("SHA-256", randomBytes(8)));
  t.bob.rows.set(row.id, { ...row, attachment: JSON.stringify({ ...meta, sha256: other }) });
  await t.bob.files.offered("alice", "file-0000004");
  await until(
    async () => (await t.bob.store.getState("file-0000004"))?.status === "damaged",
    5_000,
  );
  assertEquals(await t.bob.files.content("file-0000004"), null);
  await until(() => t.bob.files.progress.value["file-0000004"]?.status === "damaged", 2_000);
  settle(t);
});

Deno.test("a file over the size limit is refused before anything is stored", async () => {
  const t = pair({ maxBytes: 1000 });
  let err: unknown;
  try {
    await t.alice.files.prepare("file-0000005", "bob", {
      name: "big.bin",
      type: "",
      bytes: new Uint8Array(1001),
    });
  } catch (e) {
    err = e;
  }
  assert(err instanceof FileTooLargeError);
  assert(/1000|MB/.test(err.message));
  assertEquals(await t.alice.store.getState("file-0000005"), null);
  t.alice.abort.abort();
  t.bob.abort.abort();
});

Deno.test("to an offline contact: chunks go to the mailbox; past the quota the rest goes over the channel later", async () => {
  const t = pair();
  t.link.open = false;
  const bytes = randomBytes(20 * FILE_CHUNK_BYTES);
  const count = chunkCount(bytes.length);
  await announce(t, "file-0000006", bytes, "mailbox");
  t.alice.mailRoom = 3; // three batches, then quota_exceeded
  await t.alice.files.announced("file-0000006");
  assertEquals(t.alice.mailed.length, 3 * MAIL_CHUNK_BATCH);
  assert(
    t.alice.errors.some((e) => /already holds/.test(e) && /online/.test(e)),
    t.alice.errors[0],
  );
  assertEquals((await t.alice.store.getState("file-0000006"))?.status, "failed");
  // Bob logs in: the mailbox gives him the stored chunks (mail ids checked against the chunk).
  for (const m of t.alice.mailed) {
    const mail: IncomingMail = { ...m, from: "alice" };
    assert(await t.bob.files.takeMail(mail));
  }
  const forged: IncomingMail = {
    ...t.alice.mailed[0]!,
    id: chunkMailId("file-0000006", 7),
    from: "alice",
  };
  assert(await t.bob.files.takeMail(forged));
  assertEquals(t.bob.rejected, 1);
  assert(
    !(await t.bob.files.takeMail({ id: "x-00000001", from: "alice", sentAt: 1, envelope: "{}" })),
  );
  assertEquals((await t.bob.store.parts("file-0000006")).size, 3 * MAIL_CHUNK_BATCH);
  // Then a channel opens: bob asks for the rest, alice sends only that.
  t.link.open = true;
  await t.bob.files.channelOpened("alice");
  await until(async () => (await t.bob.files.content("file-0000006")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000006"), bytes));
  await until(() => t.alice.files.progress.value["file-0000006"]?.status === "complete", 2_000);
  assertEquals(t.alice.files.progress.value["file-0000006"]!.sentChunks, count - 9);
  settle(t);
});

Deno.test("cancel stops the transfer on both sides and drops the received chunks", async () => {
  const t = pair();
  const bytes = randomBytes(30 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000007", bytes);
  t.link.chunkLimit = 5;
  await t.bob.files.offered("alice", "file-0000007");
  await until(() => !t.link.open, 5_000);
  t.link.open = true;
  await t.bob.files.cancel("file-0000007");
  await until(
    async () => (await t.alice.store.getState("file-0000007"))?.status === "cancelled",
    2_000,
  );
  assertEquals((await t.bob.store.parts("file-0000007")).size, 0);
  // A late chunk is dropped, not stored.
  const writes = t.bob.store.partWrites;
  t.link.chunkLimit = Infinity;
  await t.bob.files.channelOpened("alice");
  await t.alice.files.receive(
    "bob",
    { v: 1, type: "file_have", id: "file-0000007", next: 5 },
    "p2p",
  );
  assertEquals(t.bob.store.partWrites, writes);
  settle(t);
});

Deno.test("a channel dropped while the sender waits for buffer space: the new channel's stream takes over", async () => {
  const t = pair();
  const bytes = randomBytes(30 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000008", bytes);
  t.link.fullAfter = 6;
  await t.bob.files.offered("alice", "file-0000008");
  // Alice's stream now waits for the buffer to drain; the channel drops meanwhile.
  await until(async () => (await t.bob.store.parts("file-0000008")).size === 6, 2_000);
  t.link.open = false;
  void t.alice.files.channelClosed("bob");
  void t.bob.files.channelClosed("alice");
  t.link.fullAfter = Infinity;
  t.link.open = true;
  await t.alice.files.channelOpened("bob");
  await t.bob.files.channelOpened("alice");
  await until(async () => (await t.bob.files.content("file-0000008")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000008"), bytes));
  await until(() => t.alice.files.progress.value["file-0000008"]?.resumedFrom === 6, 2_000);
  settle(t);
});

Deno.test("the receiver's last report, lost with its channel, goes again when one opens", async () => {
  const t = pair();
  const bytes = randomBytes(3 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000009", bytes);
  await t.bob.files.offered("alice", "file-0000009");
  t.link.blockHaves = true;
  await until(async () => (await t.bob.files.content("file-0000009")) !== null, 5_000);
  await until(() => t.alice.files.progress.value["file-0000009"]?.sentChunks === 3, 2_000);
  assertEquals(t.alice.files.progress.value["file-0000009"]?.status, "sending");
  t.link.blockHaves = false;
  await t.bob.files.channelOpened("alice");
  await until(() => t.alice.files.progress.value["file-0000009"]?.status === "complete", 2_000);
  settle(t);
});

Deno.test("a resume request that arrives before the sender's end of the new channel opens is answered once it opens", async () => {
  const t = pair();
  const bytes = randomBytes(40 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000012", bytes);
  t.link.chunkLimit = 10;
  await t.bob.files.offered("alice", "file-0000012");
  await until(() => !t.link.open, 5_000);
  await t.alice.files.channelClosed("bob");
  await t.bob.files.channelClosed("alice");
  await until(async () => (await t.bob.store.parts("file-0000012")).size === 10, 2_000);
  // The new channel: bob's end opens first and asks at once; alice's opens a moment later.
  t.link.chunkLimit = Infinity;
  t.link.opening.add("alice");
  t.link.open = true;
  await t.bob.files.channelOpened("alice");
  // Alice took the request (she shows bob's 10 chunks) while her end could not send yet.
  await until(() => t.alice.files.progress.value["file-0000012"]?.done === 10, 2_000);
  t.link.opening.delete("alice");
  await t.alice.files.channelOpened("bob");
  await until(async () => (await t.bob.files.content("file-0000012")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000012"), bytes));
  await until(() => t.alice.files.progress.value["file-0000012"]?.status === "complete", 2_000);
  assertEquals(t.alice.files.progress.value["file-0000012"]?.resumedFrom, 10);
  settle(t);
});

Deno.test("a receiver that gets nothing asks again: for a channel while none opens, then for the chunks", async () => {
  const t = pair({ stallMs: 200 });
  const bytes = randomBytes(30 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000013", bytes);
  t.link.chunkLimit = 8;
  await t.bob.files.offered("alice", "file-0000013");
  await until(() => !t.link.open, 5_000);
  await t.alice.files.channelClosed("bob");
  await t.bob.files.channelClosed("alice");
  // No channel opens (the attempt failed): bob keeps asking for one.
  const before = t.link.ensures;
  await until(() => t.link.ensures >= before + 3, 5_000);
  // One opens, but bob's request goes out as it closes again: lost, and nothing else asks.
  t.link.chunkLimit = Infinity;
  t.link.blockHaves = true;
  t.link.open = true;
  await t.bob.files.channelOpened("alice");
  await t.alice.files.channelOpened("bob");
  t.link.blockHaves = false;
  await until(async () => (await t.bob.files.content("file-0000013")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000013"), bytes));
  await until(() => t.alice.files.progress.value["file-0000013"]?.status === "complete", 2_000);
  assertEquals(t.alice.files.progress.value["file-0000013"]?.resumedFrom, 8);
  settle(t);
});

Deno.test("what waits in the mailbox is not sent again when the channel asks before the mailbox is read", async () => {
  const t = pair();
  t.link.open = false;
  const bytes = randomBytes(20 * FILE_CHUNK_BYTES);
  const count = chunkCount(bytes.length);
  await announce(t, "file-0000010", bytes, "mailbox");
  t.alice.mailRoom = 2;
  await t.alice.files.announced("file-0000010");
  const mailed = 2 * MAIL_CHUNK_BATCH;
  // Bob is back: the channel opens (the offer came again over it) before his mailbox is read.
  t.link.open = true;
  await t.bob.files.offered("alice", "file-0000010");
  await until(
    () => t.alice.files.progress.value["file-0000010"]?.sentChunks === count - mailed,
    2_000,
  );
  for (const m of t.alice.mailed) assert(await t.bob.files.takeMail({ ...m, from: "alice" }));
  await until(async () => (await t.bob.files.content("file-0000010")) !== null, 5_000);
  assert(await sameBytes(await t.bob.files.content("file-0000010"), bytes));
  await until(() => t.alice.files.progress.value["file-0000010"]?.status === "complete", 2_000);
  assertEquals(t.alice.files.progress.value["file-0000010"]!.sentChunks, count - mailed);
  settle(t);
});

Deno.test("after a reload a finished transfer shows from its record, and its content from storage", async () => {
  const t = pair();
  const bytes = randomBytes(2 * FILE_CHUNK_BYTES);
  await announce(t, "file-0000011", bytes);
  await t.bob.files.offered("alice", "file-0000011");
  await until(async () => (await t.bob.files.content("file-0000011")) !== null, 5_000);
  settle(t);
  // A new session of bob's over the same history and file store.
  const abort = new AbortController();
  const again = new FileTransfers({
    me: "bob",
    history: { get: (id) => t.bob.rows.get(id) ?? null },
    store: t.bob.store,
    links: {
      isOpen: () => false,
      ensure: () => {},
      send: () => false,
      bufferedAmount: () => 0,
      drained: () => Promise.resolve(),
    },
    mailSend: () => Promise.resolve(),
    control: () => {},
    isOnline: () => false,
    maxBytes: () => 25 * 1024 * 1024,
    onError: () => {},
    onRejected: () => {},
  }, abort.signal);
  await again.load("file-0000011");
  const shown = again.progress.value["file-0000011"];
  assertEquals(shown?.status, "complete");
  assertEquals(shown?.done, 2);
  assert(await sameBytes(await again.content("file-0000011"), bytes));
  abort.abort();
});

Deno.test("an import's files: those carried are stored complete, the others show as missing and are never asked for", async () => {
  const t = pair();
  const photo = randomBytes(FILE_CHUNK_BYTES + 5);
  const doc = randomBytes(100);
  await announce(t, "file-carried", photo);
  await announce(t, "file-missing", doc);
  settle(t);
  const own: MessageRow = {
    ...t.alice.rows.get("file-missing")!,
    id: "file-own-one",
    sender: "bob",
    recipient: "alice",
    peer: "alice",
  };
  // bob's fresh profile: the rows come from an import, with one file of the three.
  const rows = [t.bob.rows.get("file-carried")!, t.bob.rows.get("file-missing")!, own];
  const sent: string[] = [];
  const abort = new AbortController();
  const store = createMemoryFileStore();
  const fresh = new FileTransfers({
    me: "bob",
    history: { get: (id) => rows.find((r) => r.id === id) ?? null },
    store,
    links: {
      isOpen: () => true,
      ensure: () => {},
      send: (_remote, text) => sent.push(text) > 0,
      bufferedAmount: () => 0,
      drained: () => Promise.resolve(),
    },
    mailSend: () => Promise.resolve(),
    control: (_peer, frame) => void sent.push(JSON.stringify(frame)),
    isOnline: () => true,
    maxBytes: () => 25 * 1024 * 1024,
    onError: () => {},
    onRejected: () => {},
  }, abort.signal);
  const carried = new Map([["file-carried", { status: "complete" as const, bytes: photo }]]);
  assertEquals(await fresh.adopt(rows, carried), { stored: 1, missing: 2 });
  for (const id of ["file-carried", "file-missing", "file-own-one"]) await fresh.load(id);
  await until(() => Object.keys(fresh.progress.value).length === 3, 5_000);
  assertEquals(fresh.progress.value["file-carried"]?.status, "complete");
  assert(await sameBytes(await fresh.content("file-carried"), photo));
  assertEquals(fresh.progress.value["file-missing"]?.status, "missing");
  assertEquals(fresh.progress.value["file-missing"]?.peer, "alice");
  assertEquals(fresh.progress.value["file-own-one"]?.status, "missing");
  assertEquals(await fresh.content("file-missing"), null);
  await fresh.offered("alice", "file-missing");
  await fresh.channelOpened("alice");
  assertEquals(sent, [], "nothing asked of the sender, who may no longer hold it");
  // An export of this profile carries only what it holds.
  const picked = await fresh.exportable(rows, 1e9);
  assertEquals(picked.files.map((f) => f.id), ["file-carried"]);
  assertEquals((await fresh.exportable(rows, 10)).leftOut, 1, "past the cap");
  // The missing file comes later (a hand-over's file batch): stored, and shown complete.
  const later = new Map([["file-missing", { status: "complete" as const, bytes: doc }]]);
  assertEquals(await fresh.adopt([rows[1]!], later), { stored: 1, missing: 0 });
  // A file this device holds is left as it is.
  const other = new Map([["file-carried", { status: "complete" as const, bytes: doc }]]);
  assertEquals(await fresh.adopt([rows[0]!], other), { stored: 0, missing: 0 });
  assert(await sameBytes(await fresh.content("file-carried"), photo));
  await fresh.load("file-missing");
  await until(() => fresh.progress.value["file-missing"]?.status === "complete", 5_000);
  assert(await sameBytes(await fresh.content("file-missing"), doc));
  abort.abort();
});
