import { assert, assertEquals } from "./testing/assert.ts";
import {
  addAttachmentColumn,
  createMemoryRowStores,
  History,
  MATCH_END,
  MATCH_START,
  mergeStoredRows,
  type MessageRow,
  OPS_QUERY,
  PAGE_QUERIES,
  PEERS_QUERY,
  SCHEMA,
  searchQuery,
  searchSnippet,
  SNAPSHOT_MIN_LOG,
  SNIPPET_WORDS,
} from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";

const WASM = decodeURIComponent(
  new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
);
const sql = await loadSqlJs(WASM);

function row(id: string, sentAt: number, over: Partial<MessageRow> = {}): MessageRow {
  return {
    id,
    peer: "bob",
    sender: "alice",
    recipient: "bob",
    sentAt,
    receivedAt: null,
    text: `text ${id}`,
    via: "p2p",
    status: "sending",
    ...over,
  };
}

Deno.test("a message inserted twice with the same id is stored once", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(await h.insert(row("msg-00001", 10)), true);
  assertEquals(await h.insert(row("msg-00001", 10, { text: "changed", via: "relay" })), false);
  assertEquals(h.count(), 1);
  assertEquals(h.list("bob")[0]!.text, "text msg-00001");
  assertEquals(stores.puts, 1, "a duplicate costs no store write");
});

Deno.test("a conversation is ordered by send time, then by id", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.insert(row("msg-0000c", 20));
  await h.insert(row("msg-0000b", 10));
  await h.insert(row("msg-0000a", 20));
  await h.insert(row("msg-0000z", 5, { peer: "carol", recipient: "carol" }));
  assertEquals(h.list("bob").map((r) => r.id), ["msg-0000b", "msg-0000a", "msg-0000c"]);
  assertEquals(h.list("bob", 2).map((r) => r.id), ["msg-0000a", "msg-0000c"], "last two");
});

Deno.test("history survives closing and reopening through the store", async () => {
  const stores = createMemoryRowStores();
  const first = await History.open({ sql, openStore: stores }, "alice");
  await first.insert(row("msg-00001", 1));
  await first.insert(row("msg-00002", 2, { sender: "bob", recipient: "alice", receivedAt: 3 }));
  await first.update("msg-00001", { status: "delivered", via: "relay" });
  first.close();

  const again = await History.open({ sql, openStore: stores }, "alice");
  const rows = again.list("bob");
  assertEquals(rows.length, 2);
  assertEquals(rows[0]!.status, "delivered");
  assertEquals(rows[0]!.via, "relay");
  assertEquals(rows[1]!.receivedAt, 3);
  assertEquals(rows[1]!.sender, "bob");
});

Deno.test("each user has their own history on one device", async () => {
  const stores = createMemoryRowStores();
  const alice = await History.open({ sql, openStore: stores }, "alice");
  await alice.insert(row("msg-00001", 1));
  const bob = await History.open({ sql, openStore: stores }, "bob");
  assertEquals(bob.count(), 0);
  await bob.insert(row("msg-00002", 1, { peer: "alice", sender: "alice", recipient: "bob" }));
  const aliceAgain = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(aliceAgain.count(), 1);
  assertEquals(aliceAgain.get("msg-00002"), null);
});

Deno.test("status only moves forward: a delivered message stays delivered", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.insert(row("msg-00001", 1));
  await h.update("msg-00001", { status: "delivered" });
  const after = await h.update("msg-00001", { status: "sent", via: "p2p" });
  assertEquals(after?.status, "delivered");
  assertEquals(await h.update("missing-1", { status: "sent" }), null);
});

Deno.test("pending lists own unacknowledged messages to one peer", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.insert(row("msg-00001", 1, { status: "failed" }));
  await h.insert(row("msg-00002", 2, { status: "delivered" }));
  await h.insert(row("msg-00003", 3, { sender: "bob", recipient: "alice", status: "delivered" }));
  await h.insert(row("msg-00004", 4, { status: "sent" }));
  assertEquals(h.pending("alice", "bob").map((r) => r.id), ["msg-00001", "msg-00004"]);
});

Deno.test("persisting a message writes one row, whatever the history size", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  for (let i = 0; i < 500; i++) await h.insert(row(`msg-${String(i).padStart(5, "0")}`, i));
  const before = stores.puts;
  await h.insert(row("msg-new-01", 1000));
  assertEquals(stores.puts - before, 1);
  assert(h.count() === 501);
});

Deno.test("mailbox rows: stored and reloaded, status only moves forward, unsent peers listed", async () => {
  const stores = createMemoryRowStores();
  let h = await History.open({ sql, openStore: stores }, "alice");
  await h.insert(row("mail-00001", 10, { status: "sent", via: "mailbox" }));
  await h.insert(row("mail-00002", 11));
  await h.insert(row("mail-00003", 12, { peer: "carol", recipient: "carol", status: "failed" }));
  await h.insert(row("mail-00004", 13, { peer: "dave", recipient: "dave", status: "sent" }));
  assertEquals(h.peersWithUnsent("alice"), ["bob", "carol"]);
  assertEquals((await h.update("mail-00001", { status: "delivered" }))?.status, "delivered");
  assertEquals((await h.update("mail-00001", { status: "sent" }))?.status, "delivered");
  assertEquals((await h.update("mail-00001", { status: "failed" }))?.status, "delivered");
  assertEquals((await h.update("mail-00003", { status: "sent", via: "mailbox" }))?.via, "mailbox");
  h.close();
  h = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(h.get("mail-00001")?.via, "mailbox");
  assertEquals(h.get("mail-00001")?.status, "delivered");
  assertEquals(h.peersWithUnsent("alice"), ["bob"]);
  h.close();
});

Deno.test("a hand-over batch is imported in one store write, idempotently, status forward", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  await h.insert(row("msg-00002", 20, { status: "sent", via: "mailbox" }));
  const putsBefore = stores.puts;
  const batch = [
    row("msg-00003", 30, { status: "delivered" }),
    row("msg-00002", 20, { status: "delivered" }),
    row("msg-00001", 10, { status: "delivered" }),
  ];
  assertEquals(await h.importRows(batch), 2, "two new rows");
  assertEquals(stores.puts - putsBefore, 1, "one durable write for the whole batch");
  assertEquals(await h.importRows(batch), 0, "importing again adds nothing");
  assertEquals(stores.puts - putsBefore, 1, "and writes nothing");
  assertEquals(h.get("msg-00002")?.status, "delivered");
  assertEquals(h.get("msg-00002")?.via, "mailbox", "an existing row keeps its path");
  assertEquals(h.newestFirst().map((r) => r.id), ["msg-00003", "msg-00002", "msg-00001"]);
  h.close();
  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.count(), 3);
  again.close();
});

Deno.test("a destroyed history leaves nothing on the device", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  await h.insert(row("msg-00001", 10));
  await h.destroy();
  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.count(), 0);
  again.close();
});

Deno.test("rows stored one by one and in hand-over chunks merge, the furthest status winning", () => {
  const single = [
    row("msg-00001", 10, { status: "sent", via: "mailbox" }),
    row("msg-00002", 20, { status: "delivered", via: "relay" }),
  ];
  const chunks = [
    [row("msg-00001", 10, { status: "delivered" }), row("msg-00003", 30)],
    [row("msg-00002", 20, { status: "sent" }), row("msg-00003", 30, { status: "sent" })],
  ];
  const merged = new Map(mergeStoredRows(single, chunks).map((r) => [r.id, r]));
  assertEquals(merged.size, 3);
  assertEquals(merged.get("msg-00001")?.status, "delivered");
  assertEquals(merged.get("msg-00002")?.status, "delivered", "never back");
  assertEquals(merged.get("msg-00002")?.via, "relay");
  assertEquals(merged.get("msg-00003")?.status, "sent");
});

Deno.test("the newest-first source reads the history on demand, in order", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.importRows(Array.from({ length: 50 }, (_, i) => row(`msg-${1000 + i}`, 1000 + i)));
  const source = h.newestFirstSource();
  assertEquals(source.length, 50);
  assertEquals(source.slice(0, 2).map((r) => r.sentAt), [1049, 1048]);
  assertEquals(
    source.slice(40, 60).map((r) => r.sentAt),
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((i) => 1000 + i),
  );
  assertEquals(source.slice(1, 3).map((r) => r.sentAt), [1048, 1047]);
  h.close();
});

/** `n` delivered rows with bob, half of them own. */
function seedRows(n: number, prefix: string): MessageRow[] {
  return Array.from({ length: n }, (_, i) =>
    row(`${prefix}-${String(i).padStart(6, "0")}`, i, {
      sender: i % 2 ? "alice" : "bob",
      recipient: i % 2 ? "bob" : "alice",
      status: "delivered",
    }));
}

Deno.test("a long row log is folded into a snapshot; reopening gives the same history", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  await h.importRows(seedRows(SNAPSHOT_MIN_LOG + 10, "s"));
  await h.snapshotIfDue();
  assertEquals(stores.snapshots, 1, "the log was folded into one snapshot");
  // Writes after the snapshot: a new message, and a status change of a row the image holds.
  await h.insert(row("late-00001", 9_000_000));
  await h.update("s-000001", { status: "delivered", via: "relay" });
  const before = h.newestFirst();
  h.close();

  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.count(), SNAPSHOT_MIN_LOG + 11);
  assertEquals(again.newestFirst(), before);
  assertEquals(again.get("s-000001")!.via, "relay", "a later state laid over the image");
  assertEquals(again.pending("alice", "bob").map((r) => r.id), ["late-00001"]);
});

Deno.test("a short log is not snapshotted (each write stays one small store write)", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  for (let i = 0; i < 50; i++) await h.insert(row(`msg-${i}`, i));
  await h.snapshotIfDue();
  assertEquals(stores.snapshots, 0);
  assertEquals(stores.puts, 50);
});

Deno.test("a log row never moves a snapshotted status back", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  const rows = seedRows(SNAPSHOT_MIN_LOG, "s");
  await h.importRows(rows);
  await h.snapshotIfDue();
  h.close();
  // A stale copy of a delivered row in the log (e.g. a hand-over chunk written late).
  const store = await stores("alice");
  await store.put({ ...rows[1]!, status: "sent" });
  const again = await History.open({ sql, openStore: stores }, "alice");
  assertEquals(again.get(rows[1]!.id)!.status, "delivered");
});

Deno.test("the newest-first source reads on across a snapshot taken mid-way", async () => {
  const stores = createMemoryRowStores();
  const h = await History.open({ sql, openStore: stores }, "alice");
  const rows = seedRows(SNAPSHOT_MIN_LOG + 500, "s");
  await h.importRows(rows);
  const source = h.newestFirstSource();
  const first = source.slice(0, 100);
  await h.snapshotIfDue(); // export() must leave the source's statement working
  assertEquals(stores.snapshots, 1);
  const rest = source.slice(100, source.length);
  const expected = [...rows].reverse().map((r) => r.id);
  assertEquals([...first, ...rest].map((r) => r.id), expected);
});

Deno.test("pending and unsent peers stay correct as statuses move (partial indexes)", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.importRows(seedRows(1_000, "s"));
  await h.insert(row("own-1", 5_000));
  await h.insert(row("own-2", 5_001, { peer: "carol", recipient: "carol" }));
  await h.insert(row("own-3", 5_002));
  assertEquals(h.pending("alice", "bob").map((r) => r.id), ["own-1", "own-3"]);
  assertEquals(h.peersWithUnsent("alice"), ["bob", "carol"]);
  await h.update("own-1", { status: "sent" });
  await h.update("own-2", { status: "delivered" });
  assertEquals(h.pending("alice", "bob").map((r) => r.id), ["own-1", "own-3"]);
  assertEquals(h.peersWithUnsent("alice"), ["bob"]);
  await h.update("own-1", { status: "delivered" });
  await h.update("own-3", { status: "failed" });
  assertEquals(h.pending("alice", "bob").map((r) => r.id), ["own-3"]);
  assertEquals(h.peersWithUnsent("alice"), ["bob"]);
});

Deno.test("search finds messages by word prefixes, newest first, with the matches marked", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.insert(row("m1", 1, { text: "Lunch at the Café tomorrow?" }));
  await h.insert(row("m2", 2, { text: "the lunch was great", sender: "bob", recipient: "alice" }));
  await h.insert(row("m3", 3, { text: "lunch", peer: "carol", recipient: "carol" }));
  await h.insert(row("m4", 4, { text: "nothing to see" }));
  assertEquals(h.search("lunch").map((x) => x.id), ["m3", "m2", "m1"]);
  assertEquals(h.search("LUN cafe").map((x) => x.id), ["m1"], "prefixes, case and accents folded");
  assertEquals(h.search("lunch", { peer: "bob" }).map((x) => x.id), ["m2", "m1"]);
  assertEquals(h.search("lunch", { limit: 1 }).map((x) => x.id), ["m3"]);
  const [hit] = h.search("great");
  assertEquals(hit!.snippet, `the lunch was ${MATCH_START}great${MATCH_END}`);
  assertEquals(hit!.sender, "bob");
});

Deno.test("a search snippet marks every word the search matches as a prefix, folded like the index", () => {
  const [S, E] = [MATCH_START, MATCH_END];
  assertEquals(
    searchSnippet("Lunch at the Café tomorrow?", "LUN cafe"),
    `${S}Lunch${E} at the ${S}Café${E} tomorrow?`,
  );
  assertEquals(
    searchSnippet("lunch, lunch and más lunch!", "lunch mas"),
    `${S}lunch${E}, ${S}lunch${E} and ${S}más${E} ${S}lunch${E}!`,
  );
  // A word only contains the searched word: not a prefix match, not marked.
  assertEquals(searchSnippet("sandwich", "wich"), "sandwich");
  assertEquals(searchSnippet("", "x"), "");
});

Deno.test("a long text's snippet is the window of words with the most searched words, cut with …", () => {
  const [S, E] = [MATCH_START, MATCH_END];
  const words = Array.from({ length: 40 }, (_, i) => `w${i}`);
  // One match far in: the snippet starts at a word boundary and ends after SNIPPET_WORDS words.
  words[20] = "walrus";
  const one = searchSnippet(words.join(" ") + ".", "walrus");
  assertEquals(one.split(" ").length, SNIPPET_WORDS);
  assert(one.startsWith("…") && one.endsWith("…"), one);
  assert(one.includes(`${S}walrus${E}`), one);
  // Two different searched words close together win over one of them alone, earlier.
  words[2] = "pie";
  words[30] = "pie";
  assertEquals(
    searchSnippet(words.join(" "), "walrus pie"),
    `…w19 ${S}walrus${E} w21 w22 w23 w24 w25 w26 w27 w28 w29 ${S}pie${E}…`,
  );
  // At the end of the text: nothing cut after, the text's last characters kept.
  assertEquals(
    searchSnippet("a b c d e f g h i j k l m n o p end!", "end"),
    `…f g h i j k l m n o p ${S}end${E}!`,
  );
});

Deno.test("search input is words, never query syntax", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  await h.insert(row("m1", 1, { text: 'say "hi" OR bye' }));
  for (const input of ['"', "OR", "*", "NEAR hi", 'hi" OR "x', "-", "(((", "text:hi", "^hi"]) {
    h.search(input); // must not throw
  }
  assertEquals(h.search("").length, 0);
  assertEquals(h.search("  ** ").length, 0);
  assertEquals(h.search('"hi"').map((x) => x.id), ["m1"]);
  assertEquals(searchQuery('a "b" OR c*'), '"a*" "b*" "OR*" "c*"');
});

Deno.test("search covers a snapshot made before the index existed, and rows written later", async () => {
  const stores = createMemoryRowStores();
  // An image of a history without the search index (as saved by the previous version).
  const old = new sql.Database();
  old.run(`CREATE TABLE messages (id TEXT PRIMARY KEY, peer TEXT NOT NULL, sender TEXT NOT NULL,
    recipient TEXT NOT NULL, sent_at INTEGER NOT NULL, received_at INTEGER, text TEXT NOT NULL,
    via TEXT NOT NULL, status TEXT NOT NULL)`);
  old.run(
    "INSERT INTO messages VALUES ('m1', 'bob', 'alice', 'bob', 1, NULL, 'old walrus', 'p2p', 'delivered')",
  );
  await (await stores("alice")).saveSnapshot(old.export());
  const h = await History.open({ sql, openStore: stores }, "alice");
  await h.insert(row("m2", 2, { text: "new walrus" }));
  assertEquals(h.search("walrus").map((x) => x.id), ["m2", "m1"]);
  assertEquals(h.positionFromEnd("bob", "m1"), 2);
  assertEquals(h.positionFromEnd("bob", "m2"), 1);
  assertEquals(h.positionFromEnd("carol", "m2"), null);
});

Deno.test("the chat's refresh reads a conversation's operations through their own index, not every row", () => {
  const db = new sql.Database();
  try {
    db.run(SCHEMA);
    addAttachmentColumn(db);
    const stmt = db.prepare(`EXPLAIN QUERY PLAN ${OPS_QUERY}`);
    stmt.bind(["bob"]);
    const plan: string[] = [];
    while (stmt.step()) plan.push(String(stmt.get().at(-1)));
    stmt.free();
    assert(
      plan.some((step) => step.includes("messages_ops_in_time")),
      `plan: ${plan.join(" / ")}`,
    );
    assert(!plan.some((step) => step.includes("TEMP B-TREE")), `sorts: ${plan.join(" / ")}`);
  } finally {
    db.close();
  }
});

Deno.test("pages of a conversation by keyset: before, from and after a message, operations and hidden rows left out", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  for (let i = 0; i < 10; i++) await h.insert(row(`m${i}`, 100 + (i >> 1))); // pairs share a time
  await h.insert(row("op", 103, { text: "\u001dreact\u001dm3\u001d👍" }));
  await h.insert(row("gone", 103));
  await h.replaceText("gone", "\u001ehidden");
  await h.insert(row("other", 103, { peer: "carol", recipient: "carol" }));
  const ids = (rows: MessageRow[]) => rows.map((r) => r.id);
  const at = (i: number) => ({ sentAt: 100 + (i >> 1), id: `m${i}` });
  assertEquals(ids(h.page("bob", "before", null, 3)), ["m7", "m8", "m9"], "the newest");
  assertEquals(ids(h.page("bob", "before", at(7), 3)), ["m4", "m5", "m6"]);
  assertEquals(ids(h.page("bob", "before", at(1), 3)), ["m0"]);
  assertEquals(ids(h.page("bob", "from", at(5), 3)), ["m5", "m6", "m7"]);
  assertEquals(ids(h.page("bob", "after", at(5), 3)), ["m6", "m7", "m8"]);
  assertEquals(ids(h.page("bob", "after", at(9), 3)), []);
  assertEquals(ids(h.page("bob", "from", at(0), 100)), ids(h.list("bob")));
});

Deno.test("a page of a long conversation is read through the conversation's index from its key, not sorted whole", () => {
  const db = new sql.Database();
  try {
    db.run(SCHEMA);
    addAttachmentColumn(db);
    for (const [name, q] of Object.entries(PAGE_QUERIES)) {
      const stmt = db.prepare(`EXPLAIN QUERY PLAN ${q}`);
      stmt.bind(name === "newest" ? ["bob", 10] : ["bob", 1, "x", 10]);
      const plan: string[] = [];
      while (stmt.step()) plan.push(String(stmt.get().at(-1)));
      stmt.free();
      const said = `${name}: ${plan.join(" / ")}`;
      const search = plan.find((s) => s.startsWith("SEARCH messages USING INDEX messages_by_peer"));
      assert(search && (name === "newest" || search.includes("sent_at")), said);
      // Only the page's own few rows are put back in order (the outer query of "before").
      const sorts = plan.filter((s) => s.includes("TEMP B-TREE")).length;
      assert(sorts <= (plan.some((s) => s.startsWith("SCAN (subquery")) ? 1 : 0), said);
    }
  } finally {
    db.close();
  }
});

Deno.test("the conversations of a history are listed by name, each once, through the conversation index alone", async () => {
  const h = await History.open({ sql, openStore: createMemoryRowStores() }, "alice");
  assertEquals(h.peers(), []);
  await h.insert(row("b1", 1, { peer: "bob" }));
  await h.insert(row("c1", 2, { peer: "carol", recipient: "carol" }));
  await h.insert(row("b2", 3, { peer: "bob" }));
  await h.insert(row("a1", 4, { peer: "anna", recipient: "anna" }));
  assertEquals(h.peers(), ["anna", "bob", "carol"]);
  h.close();

  const db = new sql.Database();
  try {
    db.run(SCHEMA);
    addAttachmentColumn(db);
    const stmt = db.prepare(`EXPLAIN QUERY PLAN ${PEERS_QUERY}`);
    const plan: string[] = [];
    while (stmt.step()) plan.push(String(stmt.get().at(-1)));
    stmt.free();
    const said = plan.join(" / ");
    assert(plan.some((s) => s.includes("COVERING INDEX messages_by_peer")), said);
    assert(!plan.some((s) => s.includes("TEMP B-TREE")), said);
  } finally {
    db.close();
  }
});
