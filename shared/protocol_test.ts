import assert from "node:assert/strict";
import {
  type ErrorCode,
  MAX_DELIVER_BATCH,
  MAX_FRAME_BYTES,
  MAX_PRESENCE_BATCH,
  parseClientFrame,
  parseClusterRequest,
  parseClusterResponse,
  parseHandoverMessage,
  parsePeerMessage,
  parseServerFrame,
  ProtocolError,
} from "./mod.ts";

function rejects(parse: (t: unknown) => unknown, input: unknown, code: ErrorCode, path?: string) {
  try {
    parse(input);
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${err}`);
    assert.equal(err.code, code, `code for ${String(input).slice(0, 80)}`);
    if (path !== undefined) assert.equal(err.path, path);
    return;
  }
  assert.fail(`accepted ${String(input).slice(0, 80)}`);
}

const frame = (o: Record<string, unknown>) => JSON.stringify({ v: 1, ...o });

Deno.test("client frames: well-formed frames parse to exactly their typed fields", () => {
  assert.deepEqual(
    parseClientFrame(
      frame({ type: "login", reqId: 3, username: "alice_1", secret: "12345678", x: 1 }),
    ),
    { v: 1, type: "login", reqId: 3, username: "alice_1", secret: "12345678" },
  );
  assert.deepEqual(parseClientFrame(frame({ type: "heartbeat" })), { v: 1, type: "heartbeat" });
  assert.deepEqual(
    parseClientFrame(frame({ type: "signal", to: "bob", data: { type: "offer", sdp: "v=0" } })),
    { v: 1, type: "signal", to: "bob", data: { type: "offer", sdp: "v=0" } },
  );
});

Deno.test("client frames: garbage bytes, binary data and non-objects are rejected as such", () => {
  rejects(parseClientFrame, "\u0000\u00ff\u00fe not json", "bad_json");
  rejects(parseClientFrame, new Uint8Array([1, 2, 3]), "bad_json");
  rejects(parseClientFrame, "", "bad_json");
  rejects(parseClientFrame, "null", "bad_frame");
  rejects(parseClientFrame, "[]", "bad_frame");
  rejects(parseClientFrame, '"text"', "bad_frame");
  rejects(parseClientFrame, "42", "bad_frame");
});

Deno.test("client frames: wrong version or unknown type name the field", () => {
  rejects(parseClientFrame, JSON.stringify({ type: "ping", reqId: 1 }), "unsupported_version", "v");
  rejects(
    parseClientFrame,
    JSON.stringify({ v: "1", type: "ping", reqId: 1 }),
    "unsupported_version",
  );
  rejects(parseClientFrame, frame({ type: "PING", reqId: 1 }), "unknown_type", "type");
  rejects(parseClientFrame, frame({ type: ["ping"], reqId: 1 }), "unknown_type", "type");
  rejects(parseClientFrame, frame({ reqId: 1 }), "unknown_type", "type");
});

Deno.test("client frames: missing fields and wrong types are rejected with the field path", () => {
  rejects(parseClientFrame, frame({ type: "ping" }), "bad_frame", "reqId");
  rejects(parseClientFrame, frame({ type: "ping", reqId: -1 }), "bad_frame", "reqId");
  rejects(parseClientFrame, frame({ type: "ping", reqId: 1.5 }), "bad_frame", "reqId");
  rejects(parseClientFrame, frame({ type: "resume", reqId: 1, token: 5 }), "bad_frame", "token");
  rejects(
    parseClientFrame,
    frame({ type: "login", reqId: 1, secret: "12345678" }),
    "invalid_username",
  );
  rejects(parseClientFrame, frame({ type: "login", reqId: 1, username: "bob" }), "invalid_secret");
  rejects(parseClientFrame, frame({ type: "signal", to: "bob" }), "bad_frame", "data");
  rejects(parseClientFrame, frame({ type: "signal", to: "bob", data: [1] }), "bad_frame", "data");
  rejects(parseClientFrame, frame({ type: "relay", to: "bob", payload: { a: 1 } }), "bad_frame");
});

Deno.test("client frames: usernames follow the product rule", () => {
  for (const bad of ["ab", "a".repeat(33), "has space", "ünïcode", "a/b", "", 7, null]) {
    rejects(
      parseClientFrame,
      frame({ type: "register", reqId: 1, username: bad, secret: "12345678" }),
      "invalid_username",
      "username",
    );
  }
  for (const good of ["abc", "a".repeat(32), "A-b_9"]) {
    parseClientFrame(frame({ type: "login", reqId: 1, username: good, secret: "12345678" }));
  }
});

Deno.test("client frames: oversized frames, strings and signals are rejected", () => {
  rejects(parseClientFrame, " ".repeat(MAX_FRAME_BYTES + 1), "frame_too_large");
  rejects(
    parseClientFrame,
    frame({ type: "relay", to: "bob", payload: "x".repeat(20_000) }),
    "bad_frame",
  );
  rejects(
    parseClientFrame,
    frame({ type: "signal", to: "bob", data: { sdp: "x".repeat(20_000) } }),
    "frame_too_large",
  );
  rejects(
    parseClientFrame,
    frame({ type: "register", reqId: 1, username: "bob", secret: "x".repeat(257) }),
    "invalid_secret",
  );
});

Deno.test("server frames: clients reject malformed replies", () => {
  rejects(parseServerFrame, frame({ type: "error", code: "made_up", message: "x" }), "bad_frame");
  rejects(parseServerFrame, frame({ type: "presence", username: "bob" }), "bad_frame", "online");
  rejects(
    parseServerFrame,
    frame({ type: "presence_list", reqId: 1, users: [{ username: 1 }] }),
    "bad_frame",
  );
  rejects(
    parseServerFrame,
    frame({
      type: "presence_list",
      reqId: 1,
      users: Array(1001).fill({ username: "a", online: true }),
    }),
    "bad_frame",
    "users",
  );
  rejects(parseServerFrame, frame({ type: "contacts", reqId: 1, users: [] }), "unknown_type");
  assert.deepEqual(
    parseServerFrame(frame({ type: "presence", username: "bob", online: false })),
    { v: 1, type: "presence", username: "bob", online: false },
  );
});

Deno.test("server frames: superseded carries a bounded message and nothing else", () => {
  assert.deepEqual(
    parseServerFrame(frame({ type: "superseded", message: "Signed in elsewhere", extra: 1 })),
    { v: 1, type: "superseded", message: "Signed in elsewhere" },
  );
  rejects(parseServerFrame, frame({ type: "superseded" }), "bad_frame", "message");
  rejects(parseServerFrame, frame({ type: "superseded", message: "x".repeat(1001) }), "bad_frame");
  // Servers tell each other about new sessions another way: it cannot be delivered as is.
  rejects(
    parseClusterRequest,
    frame({ type: "deliver", to: "bob", frame: { v: 1, type: "superseded", message: "x" } }),
    "bad_frame",
  );
});

Deno.test("peer messages: chat messages are bounded and carry valid ids and names", () => {
  const ok = { type: "chat", id: "abcdefgh12", from: "alice", to: "bob", sentAt: 1, text: "hi" };
  assert.deepEqual(parsePeerMessage(frame(ok)), { v: 1, ...ok });
  rejects(parsePeerMessage, frame({ ...ok, id: "short" }), "bad_frame", "id");
  rejects(parsePeerMessage, frame({ ...ok, text: "" }), "bad_frame", "text");
  rejects(parsePeerMessage, frame({ ...ok, text: "x".repeat(4001) }), "bad_frame", "text");
  rejects(parsePeerMessage, frame({ ...ok, sentAt: "yesterday" }), "bad_frame", "sentAt");
  rejects(parsePeerMessage, frame({ ...ok, from: "no such name!" }), "invalid_username", "from");
  rejects(parsePeerMessage, "{{{", "bad_json");
});

Deno.test("peer messages: typing and read receipts are checked like the rest", () => {
  assert.deepEqual(parsePeerMessage(frame({ type: "typing", active: true })), {
    v: 1,
    type: "typing",
    active: true,
  });
  assert.deepEqual(parsePeerMessage(frame({ type: "read", upTo: 1234 })), {
    v: 1,
    type: "read",
    upTo: 1234,
  });
  rejects(parsePeerMessage, frame({ type: "typing", active: "yes" }), "bad_frame", "active");
  rejects(parsePeerMessage, frame({ type: "typing" }), "bad_frame", "active");
  rejects(parsePeerMessage, frame({ type: "read", upTo: -1 }), "bad_frame", "upTo");
  rejects(parsePeerMessage, frame({ type: "read", upTo: 1.5 }), "bad_frame", "upTo");
  rejects(parsePeerMessage, frame({ type: "read" }), "bad_frame", "upTo");
});

Deno.test("cluster requests: a presence batch carries valid notices, and at most MAX_PRESENCE_BATCH", () => {
  const notice = { username: "alice", home: "http://10.0.0.1:8001", online: true, updatedAt: 5 };
  const batch = { type: "presence_batch", notices: [notice, { ...notice, username: "bob" }] };
  assert.deepEqual(parseClusterRequest(frame(batch)), { v: 1, ...batch });
  rejects(
    parseClusterRequest,
    frame({ type: "presence_batch", notices: [notice, { ...notice, home: "not a url" }] }),
    "bad_frame",
    "notices.1.home",
  );
  rejects(
    parseClusterRequest,
    frame({ type: "presence_batch", notices: [{ ...notice, online: 1 }] }),
    "bad_frame",
    "notices.0.online",
  );
  rejects(parseClusterRequest, frame({ type: "presence_batch" }), "bad_frame", "notices");
  rejects(
    parseClusterRequest,
    frame({
      type: "presence_batch",
      notices: Array.from({ length: MAX_PRESENCE_BATCH + 1 }, () => notice),
    }),
    "bad_frame",
    "notices",
  );
});

Deno.test("cluster requests: a delivery batch holds deliverable frames, its answer one boolean each", () => {
  const item = { to: "bob", frame: { v: 1, type: "relay", from: "alice", payload: "hi" } };
  const batch = { type: "deliver_batch", items: [item, { ...item, to: "carol" }] };
  assert.deepEqual(parseClusterRequest(frame(batch)), { v: 1, ...batch });
  rejects(
    parseClusterRequest,
    frame({ type: "deliver_batch", items: [item, { ...item, frame: { v: 1, type: "pong" } }] }),
    "bad_frame",
  );
  rejects(
    parseClusterRequest,
    frame({ type: "deliver_batch", items: [{ ...item, to: "no spaces" }] }),
    "invalid_username",
    "items.0.to",
  );
  rejects(
    parseClusterRequest,
    frame({
      type: "deliver_batch",
      items: Array.from({ length: MAX_DELIVER_BATCH + 1 }, () => item),
    }),
    "bad_frame",
    "items",
  );
  assert.deepEqual(
    parseClusterResponse(frame({ type: "deliver_results", delivered: [true, false] })),
    { v: 1, type: "deliver_results", delivered: [true, false] },
  );
  rejects(
    parseClusterResponse,
    frame({ type: "deliver_results", delivered: [true, "no"] }),
    "bad_frame",
    "delivered.1",
  );
});

Deno.test("cluster requests: presence notices name a server, deliveries only signal/relay", () => {
  const notice = {
    type: "presence",
    username: "alice",
    home: "http://10.0.0.1:8001",
    online: true,
    updatedAt: 5,
  };
  assert.deepEqual(parseClusterRequest(frame(notice)), { v: 1, ...notice });
  rejects(parseClusterRequest, frame({ ...notice, home: "not a url" }), "bad_frame", "home");
  rejects(parseClusterRequest, frame({ ...notice, online: "yes" }), "bad_frame", "online");
  rejects(
    parseClusterRequest,
    frame({ type: "deliver", to: "bob", frame: { v: 1, type: "pong", reqId: 1 } }),
    "bad_frame",
    "frame.type",
  );
  // A "delivered" receipt travels to the sender's home server like signals do.
  assert.equal(
    parseClusterRequest(
      frame({
        type: "deliver",
        to: "alice",
        frame: { v: 1, type: "delivered", by: "bob", ids: ["abcdefgh"] },
      }),
    ).type,
    "deliver",
  );
  rejects(
    parseClusterRequest,
    frame({ type: "hello", from: "ftp://x", peers: [], online: [], accountCount: 0 }),
    "bad_frame",
    "from",
  );
  assert.deepEqual(
    parseClusterRequest(
      frame({ type: "hello", from: "http://a:1", peers: [], browserUrl: "https://chat.example" }),
    ),
    { v: 1, type: "hello", from: "http://a:1", peers: [], browserUrl: "https://chat.example" },
  );
  rejects(
    parseClusterRequest,
    frame({ type: "hello", from: "http://a:1", peers: [], browserUrl: "javascript:x" }),
    "bad_frame",
    "browserUrl",
  );
});

Deno.test("hand-over frames: superseded may carry a bounded grace; session notices travel between servers only", () => {
  assert.deepEqual(
    parseServerFrame(
      frame({ type: "superseded", message: "Signed in elsewhere", handoverMs: 30000 }),
    ),
    { v: 1, type: "superseded", message: "Signed in elsewhere", handoverMs: 30000 },
  );
  rejects(
    parseServerFrame,
    frame({ type: "superseded", message: "x", handoverMs: 10 * 60_000 + 1 }),
    "bad_frame",
    "handoverMs",
  );
  rejects(
    parseServerFrame,
    frame({ type: "superseded", message: "x", handoverMs: 1.5 }),
    "bad_frame",
  );
  const notice = { type: "session_started", sessionId: "abc", issuedAt: 5 };
  const signal = { type: "handover_signal", toward: "current", current: "abc", data: { a: 1 } };
  for (const f of [notice, signal]) {
    assert.equal(
      parseClusterRequest(frame({ type: "deliver", to: "alice", frame: { v: 1, ...f } })).type,
      "deliver",
    );
    // A browser can never send them: they are no client frame.
    rejects(parseClientFrame, frame(f), "unknown_type", "type");
  }
  rejects(parseServerFrame, frame({ ...signal, toward: "bob" }), "bad_frame", "toward");
  rejects(parseServerFrame, frame({ ...notice, sessionId: "" }), "bad_frame", "sessionId");
});

Deno.test("hand-over channel messages are validated", () => {
  assert.deepEqual(
    parseHandoverMessage(frame({ type: "handover_hello", nonce: "abcdefghijklmnop" })),
    { v: 1, type: "handover_hello", nonce: "abcdefghijklmnop" },
  );
  rejects(parseHandoverMessage, frame({ type: "handover_hello", nonce: "short" }), "bad_frame");
  rejects(parseHandoverMessage, frame({ type: "handover_received", seq: -1 }), "bad_frame");
  rejects(parseHandoverMessage, frame({ type: "chat" }), "unknown_type");
  rejects(parseHandoverMessage, "x".repeat(64 * 1024 + 1), "frame_too_large");
});

Deno.test("client frames: a registration needs keys and a random salt; login_params, refresh and rekey parse", () => {
  const keys = { encryption: "e".repeat(120), signing: "s".repeat(120), wrapped: "w".repeat(40) };
  const salt = "A".repeat(22);
  const base = { type: "register", reqId: 1, username: "alice", secret: "12345678" };
  rejects(parseClientFrame, frame({ ...base, salt }), "keys_required", "keys");
  rejects(parseClientFrame, frame({ ...base, keys }), "bad_frame", "salt");
  rejects(parseClientFrame, frame({ ...base, keys, salt: "A".repeat(43) }), "bad_frame", "salt");
  assert.deepEqual(parseClientFrame(frame({ ...base, keys, salt })), { v: 1, ...base, salt, keys });
  assert.deepEqual(
    parseClientFrame(frame({ type: "login_params", reqId: 2, username: "bob" })),
    { v: 1, type: "login_params", reqId: 2, username: "bob" },
  );
  rejects(
    parseClientFrame,
    frame({ type: "login_params", reqId: 2, username: "a b" }),
    "invalid_username",
  );
  const refreshToken = "x".repeat(40) + ".sig";
  assert.deepEqual(
    parseClientFrame(frame({ type: "refresh", reqId: 3, refreshToken })),
    { v: 1, type: "refresh", reqId: 3, refreshToken },
  );
  const rekey = { type: "rekey", reqId: 4, salt, secret: "12345678", wrapped: "w".repeat(40) };
  assert.deepEqual(parseClientFrame(frame(rekey)), { v: 1, ...rekey });
  rejects(parseClientFrame, frame({ ...rekey, wrapped: "" }), "bad_frame", "wrapped");
});

Deno.test("server frames: login_params carries a salt of either form; session frames carry public keys and a refresh token", () => {
  for (const salt of ["A".repeat(22), "B".repeat(43)]) {
    assert.deepEqual(
      parseServerFrame(frame({ type: "login_params", reqId: 1, username: "alice", salt })),
      { v: 1, type: "login_params", reqId: 1, username: "alice", salt },
    );
  }
  rejects(
    parseServerFrame,
    frame({ type: "login_params", reqId: 1, username: "alice", salt: "A".repeat(30) }),
    "bad_frame",
    "salt",
  );
  const publicKeys = { encryption: "e".repeat(120), signing: "s".repeat(120) };
  const session = {
    type: "session",
    reqId: 1,
    username: "alice",
    token: "t".repeat(40),
    expiresAt: 5,
    servers: ["http://127.0.0.1:1"],
    publicKeys,
    refreshToken: "r".repeat(40),
    rekey: true,
  };
  assert.deepEqual(parseServerFrame(frame(session)), { v: 1, ...session });
});

Deno.test("watch frames: names are checked one by one, duplicates dropped, at most 1,000", () => {
  assert.deepEqual(
    parseClientFrame(frame({ type: "watch", reqId: 4, usernames: ["bob", "carol", "bob"] })),
    { v: 1, type: "watch", reqId: 4, usernames: ["bob", "carol"] },
  );
  assert.deepEqual(
    parseClientFrame(frame({ type: "watch", reqId: 5, usernames: [] })),
    { v: 1, type: "watch", reqId: 5, usernames: [] },
  );
  const many = Array.from({ length: 1000 }, (_, i) => `user${i}`);
  assert.equal(
    (parseClientFrame(frame({ type: "watch", reqId: 6, usernames: many })) as {
      usernames: string[];
    })
      .usernames.length,
    1000,
  );
  rejects(
    parseClientFrame,
    frame({ type: "watch", reqId: 7, usernames: [...many, "one_more"] }),
    "bad_frame",
    "usernames",
  );
  rejects(
    parseClientFrame,
    frame({ type: "watch", reqId: 8, usernames: ["bob", "no spaces"] }),
    "invalid_username",
    "usernames.1",
  );
  rejects(parseClientFrame, frame({ type: "watch", reqId: 9, usernames: "bob" }), "bad_frame");
  rejects(parseClientFrame, frame({ type: "watch", usernames: [] }), "bad_frame", "reqId");
  // The whole-directory frame is gone: asking for it is an unknown type.
  rejects(parseClientFrame, frame({ type: "contacts", reqId: 1 }), "unknown_type", "type");
});
