import assert from "node:assert/strict";
import { assertEquals } from "./testing/assert.ts";
import {
  addContact,
  BadContactLinkError,
  blockUser,
  type ContactBook,
  ContactBookFullError,
  contactLink,
  EMPTY_BOOK,
  handoverContacts,
  MAX_CONTACTS,
  mergeBooks,
  noteRequest,
  parseContactLink,
  parseHandoverContacts,
  removeContact,
  senderKind,
  storedBook,
  unblockUser,
} from "./contacts.ts";
import { ProtocolError } from "../shared/mod.ts";

const KEY_ID = "A".repeat(21) + "b_-" + "9".repeat(19);

Deno.test("contact book: add, request, accept, block and unblock keep the lists apart", () => {
  let book: ContactBook = EMPTY_BOOK;
  book = addContact(book, "carol");
  book = addContact(book, "bob");
  book = addContact(book, "bob");
  assertEquals(book.contacts, ["bob", "carol"], "sorted, no duplicate");
  assertEquals(senderKind(book, "bob"), "contact");
  // A stranger writes: a request; a contact writing changes nothing.
  book = noteRequest(book, "mallory");
  book = noteRequest(book, "eve");
  book = noteRequest(book, "bob");
  assertEquals(book.requests, ["eve", "mallory"]);
  assertEquals(senderKind(book, "eve"), "request");
  // Accepting makes a contact of the request.
  book = addContact(book, "eve");
  assertEquals(book.requests, ["mallory"]);
  assertEquals(book.contacts, ["bob", "carol", "eve"]);
  // Blocking takes them off both lists; their later messages make no request.
  book = blockUser(book, "mallory");
  book = blockUser(book, "carol");
  assertEquals(book, { contacts: ["bob", "eve"], requests: [], blocked: ["carol", "mallory"] });
  assertEquals(senderKind(book, "mallory"), "blocked");
  assertEquals(noteRequest(book, "mallory"), book);
  // Unblocking makes them a stranger again; adding a blocked user unblocks them.
  book = unblockUser(book, "mallory");
  assertEquals(senderKind(book, "mallory"), "request");
  assertEquals(book.requests, []);
  book = addContact(book, "carol");
  assertEquals(book.blocked, []);
  book = removeContact(book, "bob");
  assertEquals(book.contacts, ["carol", "eve"]);
  assertEquals(EMPTY_BOOK, { contacts: [], requests: [], blocked: [] }, "never changed in place");
});

Deno.test("contact book: at most 1,000 contacts, the servers' watch limit", () => {
  let book: ContactBook = EMPTY_BOOK;
  for (let i = 0; i < MAX_CONTACTS; i++) book = addContact(book, `user${i}`);
  assert.throws(() => addContact(book, "one_more"), ContactBookFullError);
  assertEquals(addContact(book, "user7"), book, "an existing contact is no addition");
});

Deno.test("contact book: the hand-over form round-trips, and a merge keeps blocks", () => {
  const old: ContactBook = { contacts: ["bob", "dave"], requests: ["eve"], blocked: ["mallory"] };
  assertEquals(parseHandoverContacts(JSON.parse(handoverContacts(old)), "alice"), old);
  const local: ContactBook = { contacts: ["carol", "mallory"], requests: ["dave"], blocked: [] };
  assertEquals(mergeBooks(local, old), {
    contacts: ["bob", "carol", "dave"],
    requests: ["eve"],
    blocked: ["mallory"],
  });
});

Deno.test("contact book: a malformed hand-over is a ProtocolError; a bad stored book is empty", () => {
  const bad: unknown[] = [
    null,
    [],
    { contacts: "bob", requests: [], blocked: [] },
    { contacts: ["alice"], requests: [], blocked: [] },
    { contacts: ["no spaces"], requests: [], blocked: [] },
    { contacts: [7], requests: [], blocked: [] },
    { contacts: [], requests: [], blocked: Array(1001).fill("x") },
    { contacts: [] },
  ];
  for (const value of bad) {
    assert.throws(() => parseHandoverContacts(value, "alice"), ProtocolError);
    assertEquals(storedBook(value, "alice"), EMPTY_BOOK);
  }
  assertEquals(storedBook(undefined, "alice"), EMPTY_BOOK);
  // Lists that overlap are made disjoint: a block wins.
  assertEquals(
    parseHandoverContacts({ contacts: ["bob"], requests: ["bob"], blocked: ["bob"] }, "alice"),
    { contacts: [], requests: [], blocked: ["bob"] },
  );
});

Deno.test("contact links: made and read back; not a link is null", () => {
  const link = contactLink("https://chat.example.org/", { username: "bob_2", keyId: KEY_ID });
  assertEquals(link, `https://chat.example.org/#add=bob_2&fp=${KEY_ID}`);
  assertEquals(parseContactLink(new URL(link).hash), { username: "bob_2", keyId: KEY_ID });
  assertEquals(parseContactLink(`add=bob_2&fp=${KEY_ID}`), { username: "bob_2", keyId: KEY_ID });
  assertEquals(parseContactLink(`#fp=${KEY_ID}&add=bob_2`), null, "must start with add=");
  assertEquals(parseContactLink(""), null);
  assertEquals(parseContactLink("#"), null);
  assertEquals(parseContactLink("#chat=bob"), null);
});

Deno.test("contact links: hostile links are refused with a reason, never half-read", () => {
  const hostile = [
    `#add=bob&fp=${KEY_ID}&fp=${"B".repeat(43)}`,
    `#add=bob&add=mallory&fp=${KEY_ID}`,
    `#add=bob&fp=${KEY_ID}&next=javascript:alert(1)`,
    `#add=bob%00&fp=${KEY_ID}`,
    `#add=<script>&fp=${KEY_ID}`,
    `#add=${"a".repeat(33)}&fp=${KEY_ID}`,
    `#add=../../etc&fp=${KEY_ID}`,
    `#add=bob`,
    `#add=bob&fp`,
    `#add=bob&fp=`,
    `#add=bob&fp=${KEY_ID}x`,
    `#add=bob&fp=${KEY_ID.slice(1)}=`,
    `#add=bob&fp=${"a".repeat(5000)}`,
    `#add=&fp=${KEY_ID}`,
    `#add=bob&&fp=${KEY_ID}`,
  ];
  for (const hash of hostile) {
    assert.throws(() => parseContactLink(hash), BadContactLinkError, hash);
  }
});
