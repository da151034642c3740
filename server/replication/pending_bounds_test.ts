import assert from "node:assert/strict";
import { type MailboxEntry, NodeStore } from "../store/mod.ts";
import { PendingBounds } from "./pending_bounds.ts";

const entry = (id: string, sender = "alice", envelope = "x".repeat(10)): MailboxEntry => ({
  recipient: "bob",
  messageId: id,
  ringKey: "80",
  sender,
  sentAt: 1,
  seq: 1,
  envelope,
});

Deno.test("pending bounds: never below the exact counts, whatever adds or removes entries; exact on demand", () => {
  const store = new NodeStore(":memory:");
  const bounds = new PendingBounds(store.mailbox);
  store.mailbox.insert([entry("a1"), entry("a2"), entry("c1", "carol")]);
  assert.equal(bounds.to("bob"), 3);
  assert.deepEqual(bounds.from("bob", "alice"), { count: 2, chars: 20 });
  // Entries stored by anyone (a replica copy, a repair push) raise the bounds at once...
  store.putItems({
    entries: [entry("a3"), entry("m1", "mallory", "y".repeat(50))],
    tombstones: [],
    accounts: [],
  });
  assert.equal(bounds.to("bob"), 5);
  assert.deepEqual(bounds.from("bob", "alice"), { count: 4, chars: 80 });
  assert.deepEqual(bounds.from("bob", "alice", true), { count: 3, chars: 30 });
  // ...acknowledgements lower only the exact counts, which a quota reads before refusing.
  store.mailbox.tombstone(["a1", "a2", "a3"].map((messageId) => ({
    recipient: "bob",
    messageId,
    ringKey: "80",
    deletedAt: 2,
  })));
  assert.equal(bounds.to("bob"), 5);
  assert.equal(bounds.to("bob", true), 2);
  assert.deepEqual(bounds.from("bob", "alice", true), { count: 0, chars: 0 });
  // An insert that changes nothing (a copy already held) keeps the bound above the count.
  store.mailbox.insert([entry("c1", "carol")]);
  assert.ok(bounds.to("bob") >= store.mailbox.countPending("bob"));
  assert.equal(bounds.to("bob", true), 2);
  store.close();
});
