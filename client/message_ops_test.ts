import { assert, assertEquals } from "./testing/assert.ts";
import { sealedFrameText } from "../shared/mod.ts";
import {
  bodyOf,
  cleanSnippet,
  DELETED_TEXT,
  encodeBody,
  foldOps,
  HIDDEN_TEXT,
  type MessageBody,
  MessageOpError,
  MessageOps,
  parseBody,
  parseReceivedBody,
  plainText,
  REACTIONS,
} from "./message_ops.ts";
import {
  createMemoryRowStores,
  History,
  MATCH_END,
  MATCH_START,
  mergeStoredRows,
  type MessageRow,
} from "./history.ts";
import { readRow } from "./handover.ts";
import { exportHistory, importHistoryFile } from "./history_export.ts";
import { Inbox } from "./inbox.ts";
import { keyringOf, memoryHistory, sealedBy } from "./testing/parts.ts";
import { loadSqlJs } from "./sql_loader.ts";

const sql = await loadSqlJs(
  decodeURIComponent(
    new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
  ),
);

/** A row of alice's conversation with bob, sent by `sender`. */
function row(id: string, sentAt: number, text: string, sender = "alice"): MessageRow {
  return {
    id,
    peer: "bob",
    sender,
    recipient: sender === "alice" ? "bob" : "alice",
    sentAt,
    receivedAt: sender === "alice" ? null : sentAt + 1,
    text,
    via: "p2p",
    status: "delivered",
  };
}

const op = (id: string, sentAt: number, body: MessageBody, sender = "alice") =>
  row(id, sentAt, encodeBody(body), sender);

function throwsOpError(fn: () => unknown, what: string): void {
  try {
    fn();
  } catch (err) {
    assert(err instanceof MessageOpError, `${what}: a MessageOpError, not ${err}`);
    return;
  }
  throw new Error(`${what}: expected a MessageOpError`);
}

/** Every order of `items` (small arrays only). */
function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((x, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((p) => [x, ...p])
  );
}

Deno.test("every body encodes to a text that parses back to it", () => {
  const bodies: MessageBody[] = [
    { kind: "text", text: "hello ✓" },
    { kind: "reply", replyTo: "target-0001", text: "a reply\nwith two lines" },
    { kind: "deleted" },
    { kind: "hidden" },
    { kind: "edit", target: "target-0001", text: "new words" },
    ...REACTIONS.flatMap((emoji) => [
      { kind: "react" as const, target: "target-0001", emoji, on: true },
      { kind: "react" as const, target: "target-0001", emoji, on: false },
    ]),
    { kind: "delete", target: "target-0001" },
  ];
  for (const body of bodies) assertEquals(parseBody(encodeBody(body)), body);
});

Deno.test("hostile or malformed operation texts are refused, never half-applied", () => {
  const hostile = [
    "\u001dedit\u001dshort\u001dx", // id too short
    "\u001dedit\u001dbad id!!!\u001dx", // id with bad characters
    `\u001dedit\u001d${"a".repeat(65)}\u001dx`, // id too long
    "\u001dedit\u001dtarget-0001\u001d", // empty edit
    "\u001dedit\u001dtarget-0001\u001d   ", // blank edit
    "\u001dedit\u001dtarget-0001\u001d\u001dnested", // edit text that is itself an operation
    "\u001dreact\u001dtarget-0001\u001d+💩", // not an offered reaction
    "\u001dreact\u001dtarget-0001\u001d👍", // no + or -
    "\u001dreact\u001dtarget-0001\u001d+👍👍", // two reactions
    "\u001ddelete\u001dtarget-0001\u001dextra", // a delete carries nothing
    "\u001ddelete\u001dtarget-0001", // unterminated
    "\u001dpromote\u001dtarget-0001\u001d", // unknown operation
    "\u001d", // nothing at all
    "\u001fno-end reply", // a reply without its header end
    "\u001ftarget-0001\u001f", // an empty reply
    "\u001ebogus", // unknown tombstone
  ];
  for (const text of hostile) throwsOpError(() => parseReceivedBody(text), JSON.stringify(text));
  throwsOpError(() => parseReceivedBody(HIDDEN_TEXT), "a local tombstone sent");
  assertEquals(parseReceivedBody(DELETED_TEXT), { kind: "deleted" }, "deleted before it went out");
  // Stored rows never throw: a text that does not parse shows as it is.
  assertEquals(bodyOf("\u001dpromote\u001dx"), { kind: "text", text: "\u001dpromote\u001dx" });
});

Deno.test("what cannot be encoded is refused before anything is sent", () => {
  throwsOpError(
    () => encodeBody({ kind: "edit", target: "target-0001", text: "x".repeat(4000) }),
    "too long once encoded",
  );
  throwsOpError(
    () => encodeBody({ kind: "react", target: "target-0001", emoji: "💩" as "👍", on: true }),
    "an emoji not on offer",
  );
  throwsOpError(() => encodeBody({ kind: "delete", target: "x" }), "a bad id");
  throwsOpError(() => encodeBody({ kind: "reply", replyTo: "target-0001", text: " " }), "blank");
  // Typed text never becomes an operation: the leading control characters are dropped.
  assertEquals(
    plainText("\u001d\u001fdelete\u001dtarget-0001\u001d"),
    "delete\u001dtarget-0001\u001d",
  );
  assertEquals(encodeBody({ kind: "text", text: "\u001ehidden" }), "hidden");
});

Deno.test("edits, reactions and deletes give the same view in whatever order they arrive", () => {
  const target = row("target-0001", 100, "original");
  const theirs = row("theirs-0001", 101, "bob's words", "bob");
  const ops = [
    op("edit-00001", 200, { kind: "edit", target: target.id, text: "first edit" }),
    op("edit-00002", 300, { kind: "edit", target: target.id, text: "last edit" }),
    // Same edit time: the higher id wins, on every device.
    op("edit-00000", 300, { kind: "edit", target: target.id, text: "tied, lower id" }),
    // bob cannot edit alice's message, nor alice bob's.
    op("forged-001", 900, { kind: "edit", target: target.id, text: "forged" }, "bob"),
    op("forged-002", 900, { kind: "edit", target: theirs.id, text: "forged" }),
    op("react-0001", 210, { kind: "react", target: target.id, emoji: "👍", on: true }, "bob"),
    op("react-0002", 220, { kind: "react", target: target.id, emoji: "👍", on: true }),
    op("react-0003", 230, { kind: "react", target: target.id, emoji: "👍", on: false }),
    op("react-0004", 240, { kind: "react", target: target.id, emoji: "❤️", on: true }),
    op("react-0005", 250, { kind: "react", target: target.id, emoji: "❤️", on: true }), // again
    op("react-0006", 260, { kind: "react", target: theirs.id, emoji: "😂", on: true }),
  ];
  const expected = {
    [target.id]: {
      text: "last edit",
      deleted: false,
      editedAt: 300,
      replyTo: null,
      reactions: [
        { emoji: "👍", count: 1, mine: false },
        { emoji: "❤️", count: 1, mine: true },
      ],
    },
    [theirs.id]: {
      text: "bob's words",
      deleted: false,
      editedAt: null,
      replyTo: null,
      reactions: [{ emoji: "😂", count: 1, mine: true }],
    },
  };
  // 11 ops: a few hundred orders (shuffles), plus reversed and sorted.
  const orders = [ops, [...ops].reverse()];
  let seed = 15;
  const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 300; i++) {
    // Fisher–Yates with a fixed seed: the same orders on every run.
    const order = [...ops];
    for (let j = order.length - 1; j > 0; j--) {
      const k = Math.floor(next() * (j + 1));
      [order[j], order[k]] = [order[k]!, order[j]!];
    }
    orders.push(order);
  }
  for (const order of orders) {
    const views = foldOps([target, theirs], order, "alice");
    assertEquals(Object.fromEntries(views) as Record<string, unknown>, expected);
  }
});

Deno.test("a delete by the author wins over edits and reactions, in any order; a forged one does nothing", () => {
  const target = row("target-0001", 100, "secret");
  const ops = [
    op("edit-00001", 200, { kind: "edit", target: target.id, text: "edited" }),
    op("react-0001", 210, { kind: "react", target: target.id, emoji: "🙏", on: true }, "bob"),
    op("delete-001", 150, { kind: "delete", target: target.id }),
  ];
  for (const order of permutations(ops)) {
    const view = foldOps([target], order, "alice").get(target.id)!;
    assertEquals([view.deleted, view.text, view.reactions], [true, "", []]);
  }
  const forged = op("delete-002", 150, { kind: "delete", target: target.id }, "bob");
  assertEquals(foldOps([target], [forged], "alice").get(target.id)!.deleted, false);
});

Deno.test("a reply shows its quoted message's sender and current text, or that it is gone", () => {
  const original = row("target-0001", 100, "the original words", "bob");
  const reply = op("reply-0001", 200, {
    kind: "reply",
    replyTo: original.id,
    text: "my answer",
  });
  const edit = op("edit-00001", 300, { kind: "edit", target: original.id, text: "edited" }, "bob");
  let views = foldOps([original, reply], [edit], "alice");
  assertEquals(views.get(reply.id)!.text, "my answer");
  assertEquals(views.get(reply.id)!.replyTo, {
    id: original.id,
    sender: "bob",
    snippet: "edited",
    deleted: false,
  });
  // Not among the shown rows: looked up.
  views = foldOps([reply], [], "alice", (id) => id === original.id ? original : null);
  assertEquals(views.get(reply.id)!.replyTo!.snippet, "the original words");
  views = foldOps([reply], [], "alice");
  assertEquals(views.get(reply.id)!.replyTo!.sender, null, "not stored here");
  const deleted = { ...original, text: DELETED_TEXT };
  views = foldOps([deleted, reply], [], "alice");
  assertEquals(views.get(reply.id)!.replyTo!.deleted, true);
  assertEquals(
    cleanSnippet(`\u001f${original.id}\u001fmy \u0001answer\u0002`),
    "my \u0001answer\u0002",
  );
});

/** alice's history with the ops applier, as a session has them. */
async function opsRig(stores = createMemoryRowStores()) {
  const history = await History.open({ sql, openStore: stores }, "alice");
  const ops = new MessageOps(history);
  const store = async (r: MessageRow) => {
    assert(await history.insert(r), `${r.id} is new`);
    await ops.afterStore(r);
  };
  return { history, ops, store, stores };
}

Deno.test("delete for everyone removes the text from the history and the search index, even when it arrives first", async () => {
  const { history, store } = await opsRig();
  // bob's delete comes out of the mailbox before the message it deletes.
  await store(op("delete-001", 200, { kind: "delete", target: "theirs-0001" }, "bob"));
  await store(row("theirs-0001", 100, "launch codes tomorrow", "bob"));
  await store(row("theirs-0002", 110, "launch party tonight", "bob"));
  await store(op("edit-00001", 120, { kind: "edit", target: "theirs-0002", text: "x" }, "bob"));
  assertEquals(history.get("theirs-0001")!.text, DELETED_TEXT);
  // theirs-0002 now reads "x": found by that, no longer by its original text.
  assertEquals(history.search("launch").map((h) => h.id), []);
  assertEquals(history.search("x").map((h) => h.id), ["theirs-0002"]);
  // The message first, then its delete: gone from search too, and the author's edit with it.
  await store(op("delete-002", 210, { kind: "delete", target: "theirs-0002" }, "bob"));
  assertEquals(history.search("launch"), []);
  assertEquals(history.get("theirs-0002")!.text, DELETED_TEXT);
  assert(!history.get("edit-00001")!.text.includes("x"), "the edit's text is gone");
  // An edit arriving after the delete keeps no text either.
  await store(op("edit-00002", 220, { kind: "edit", target: "theirs-0002", text: "late" }, "bob"));
  assertEquals(bodyOf(history.get("edit-00002")!.text).kind, "delete");
  // Shown as deleted; operations are not shown, nor searched.
  assertEquals(history.list("bob").map((r) => [r.id, r.text]), [
    ["theirs-0001", DELETED_TEXT],
    ["theirs-0002", DELETED_TEXT],
  ]);
  assertEquals(history.search("late"), []);
  history.close();
});

Deno.test("search finds an edited message by its latest text only, whatever order the edits arrive in", async () => {
  const { history, store } = await opsRig();
  await store(row("mine-00001", 100, "meet at the station"));
  await store(row("mine-00002", 101, "station closed today"));
  await store(row("theirs-0001", 102, "which station?", "bob"));
  // Two edits of mine-00001, the later one stored first; bob's forged edit of it counts for nothing.
  await store(
    op("edit-00002", 120, { kind: "edit", target: "mine-00001", text: "meet at the harbour" }),
  );
  await store(
    op("edit-00001", 110, { kind: "edit", target: "mine-00001", text: "meet at the airport" }),
  );
  await store(
    op(
      "forged-001",
      130,
      { kind: "edit", target: "mine-00001", text: "meet at the museum" },
      "bob",
    ),
  );
  assertEquals(history.search("harbour").map((h) => h.id), ["mine-00001"]);
  assertEquals(history.search("airport"), [], "an older edit");
  assertEquals(history.search("museum"), [], "another user's edit");
  assertEquals(history.search("edit"), [], "the operation's own words");
  // The original text is found no more; the other messages with it still are, newest first.
  assertEquals(history.search("station").map((h) => h.id), ["theirs-0001", "mine-00002"]);
  const [hit] = history.search("harb", { peer: "bob" });
  assertEquals(hit!.snippet, `meet at the ${MATCH_START}harbour${MATCH_END}`);
  assertEquals(history.search("harbour", { peer: "carol" }), []);
  // The limit counts the results shown, edited ones included.
  assertEquals(history.search("meet", { limit: 1 }).map((h) => h.id), ["mine-00001"]);
  // The newest match by its stored text is edited away: the next ones fill the limit.
  await store(row("mine-00003", 103, "station at the corner"));
  await store(op("edit-00003", 125, { kind: "edit", target: "mine-00003", text: "the corner" }));
  assertEquals(history.search("station", { limit: 2 }).map((h) => h.id), [
    "theirs-0001",
    "mine-00002",
  ]);
  // Deleted for everyone: found by nothing.
  await store(op("delete-001", 140, { kind: "delete", target: "mine-00001" }));
  assertEquals(history.search("harbour"), []);
  assertEquals(history.search("meet"), []);
  assertEquals(history.search("station").map((h) => h.id), ["theirs-0001", "mine-00002"]);
  history.close();
});

Deno.test("a delete from someone other than the author changes nothing", async () => {
  const { history, store } = await opsRig();
  await store(row("mine-00001", 100, "my own words"));
  // bob claims to delete alice's message (the op is his: its row says so, it was signed by him).
  await store(op("delete-001", 200, { kind: "delete", target: "mine-00001" }, "bob"));
  await store(op("delete-002", 200, { kind: "delete", target: "theirs-0009" }, "bob"));
  await store(row("theirs-0009", 100, "words of carol", "carol"));
  assertEquals(history.get("mine-00001")!.text, "my own words");
  assertEquals(history.search("words").length, 2);
  history.close();
});

Deno.test("deleted texts and operations survive the snapshot and its log, a hand-over and an export", async () => {
  const stores = createMemoryRowStores();
  const { history, store } = await opsRig(stores);
  await store(row("theirs-0001", 100, "private matter", "bob"));
  await store(op("reply-0001", 110, {
    kind: "reply",
    replyTo: "theirs-0001",
    text: "quoted answer",
  }));
  await store(
    op("react-0001", 120, { kind: "react", target: "reply-0001", emoji: "😮", on: true }),
  );
  // Seed enough rows for a snapshot, take it, then delete (a log row over the image).
  await history.importRows(
    Array.from({ length: 2_100 }, (_, i) => row(`seed-${String(i).padStart(6, "0")}`, i, "seed")),
  );
  await history.snapshotIfDue();
  assertEquals(stores.snapshots, 1);
  await store(op("delete-001", 200, { kind: "delete", target: "theirs-0001" }, "bob"));
  const before = history.newestFirst();
  history.close();

  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.newestFirst(), before, "the same rows after reopening");
  assertEquals(again.get("theirs-0001")!.text, DELETED_TEXT, "the log's delete over the image");
  assertEquals(again.search("private"), []);
  assertEquals(again.search("quoted").map((h) => h.id), ["reply-0001"]);
  assertEquals(again.ops("bob").map((r) => r.id), ["react-0001", "delete-001"]);

  // Hand-over / export: every row format passes the row check and imports whole.
  const rows = again.newestFirst();
  for (const r of rows) assertEquals(readRow(structuredClone(r), "rows[0]", "alice"), r);
  const file = await exportHistory("alice", rows, "correct horse battery", 1);
  assertEquals(await importHistoryFile(file, "correct horse battery", "alice"), rows);
  // Into a device that still has the message undeleted: the delete wins there too.
  const other = await memoryHistory("alice");
  await other.insert(row("theirs-0001", 100, "private matter", "bob"));
  await other.importRows(rows);
  assertEquals(other.get("theirs-0001")!.text, DELETED_TEXT);
  assertEquals(other.search("private"), []);
  assertEquals(other.newestFirst(), rows);
  // And the other way round: an old copy imported later does not bring the text back.
  await other.importRows([row("theirs-0001", 100, "private matter", "bob")]);
  await other.importRow(row("theirs-0001", 100, "private matter", "bob"));
  assertEquals(other.get("theirs-0001")!.text, DELETED_TEXT);
  // The two IndexedDB stores (single rows, hand-over chunks) merge the same way.
  const plain = row("theirs-0001", 100, "private matter", "bob");
  const gone = { ...plain, text: DELETED_TEXT };
  assertEquals(mergeStoredRows([gone], [[plain]]), [gone]);
  assertEquals(mergeStoredRows([plain], [[gone]]), [gone]);
  again.close();
  other.close();
});

Deno.test("inbox: operations from a contact are stored and acknowledged once, not counted as messages; malformed ones are refused and shown", async () => {
  const history = await memoryHistory("bob");
  const ops = new MessageOps(history);
  const abort = new AbortController();
  const acks: string[] = [];
  const stored: number[] = [];
  const opsFrom: string[] = [];
  const discarded: string[] = [];
  const mailbox: Array<{ id: string; from: string; sentAt: number; envelope: string }> = [];
  const inbox = new Inbox({
    me: "bob",
    history,
    keyring: await keyringOf("bob"),
    session: {
      mailFetch: () => Promise.resolve(structuredClone(mailbox)),
      mailAck: () => Promise.resolve(),
    },
    reply: (_remote, msg) => msg.type === "ack" && acks.push(msg.id) > 0,
    acknowledge: () => Promise.resolve(true),
    onPong: () => {},
    onStored: (_from, count) => stored.push(count),
    afterStore: async (r) => void await ops.afterStore(r),
    onOps: (from) => opsFrom.push(from),
    onDiscarded: (m) => discarded.push(m.text),
    onRejected: () => {},
    now: () => 42,
  }, abort.signal);
  try {
    const live = async (id: string, sentAt: number, text: string) =>
      await inbox.receiveLive(
        "alice",
        sealedFrameText(await sealedBy("alice", "bob", { id, sentAt, text })),
        "p2p",
      );
    // Through the mailbox, the delete before its message.
    for (
      const [id, sentAt, text] of [
        ["delete-001", 20, encodeBody({ kind: "delete", target: "message-001" })],
        ["message-001", 10, "soon deleted"],
      ] as const
    ) {
      const env = await sealedBy("alice", "bob", { id, sentAt, text });
      mailbox.push({ id, from: "alice", sentAt, envelope: JSON.stringify(env) });
    }
    await inbox.fetchMail();
    assertEquals(history.get("message-001")!.text, DELETED_TEXT);
    await live("message-002", 30, "hello");
    await live(
      "react-0001",
      40,
      encodeBody({ kind: "react", target: "message-002", emoji: "👍", on: true }),
    );
    await live(
      "react-0001",
      40,
      encodeBody({ kind: "react", target: "message-002", emoji: "👍", on: true }),
    );
    // Malformed: refused with a visible entry, nothing stored.
    await live("bad-op-001", 50, "\u001dreact\u001dmessage-002\u001d+💩");
    await live("bad-op-002", 51, "\u001dedit\u001d../../x\u001dhi");
    assertEquals(history.get("bad-op-001"), null);
    assertEquals(history.get("bad-op-002"), null);
    assertEquals(discarded.length, 2);
    assert(discarded.every((t) => t.includes("malformed")), discarded.join());
    assertEquals(stored, [1, 1], "the two messages counted, not the operations");
    assertEquals(opsFrom, ["alice", "alice"]);
    assertEquals(acks, ["message-002", "react-0001", "react-0001"], "a duplicate is acked again");
    const views = foldOps(history.list("alice"), history.ops("alice"), "bob");
    assertEquals(views.get("message-002")!.reactions, [{ emoji: "👍", count: 1, mine: false }]);
  } finally {
    abort.abort();
    history.close();
  }
});

Deno.test("delete for me hides a message on this device only, for good", async () => {
  const stores = createMemoryRowStores();
  const { history, store } = await opsRig(stores);
  await store(row("theirs-0001", 100, "hide this remark", "bob"));
  await store(row("theirs-0002", 110, "keep this remark", "bob"));
  await history.replaceText("theirs-0001", HIDDEN_TEXT);
  assertEquals(history.list("bob").map((r) => r.id), ["theirs-0002"]);
  assertEquals(history.search("remark").map((h) => h.id), ["theirs-0002"]);
  // The author deleting it for everyone later does not bring it back as "deleted".
  await store(op("delete-001", 200, { kind: "delete", target: "theirs-0001" }, "bob"));
  assertEquals(history.get("theirs-0001")!.text, HIDDEN_TEXT);
  // A copy arriving again (another path) is not stored again.
  assertEquals(await history.insert(row("theirs-0001", 100, "hide this remark", "bob")), false);
  history.close();
  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.list("bob").map((r) => r.id), ["theirs-0002"]);
  assertEquals(again.search("hide"), []);
  again.close();
});
