/**
 * The deferred hand-over's client logic: a transfer interrupted for good (the old device was
 * killed) resumes in a new transfer after the receiver's cursor, each row once; the cursor is
 * bound into the signed acknowledgement; and the claim loop of a reopened old device
 * ({@link DeferredHandover}) waits while the new device is offline, stops when there is nothing
 * to claim, and gives up after its bound.
 */
import { signal } from "@preact/signals";
import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { type HandoverKeys, HandoverReceiveJob, HandoverSendJob } from "./handover.ts";
import type { MessageRow } from "./history.ts";
import { DeferredHandover } from "./deferred_handover.ts";
import type { HandoverSource, HandoverState } from "./handover_controller.ts";
import type { History } from "./history.ts";
import type { OwnKeys } from "./keyring.ts";
import { ServerError } from "./session.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import {
  exportPublicKey,
  importPublicKey,
  type UserKeyPairs,
  verifyHandoverClaim,
} from "../shared/crypto/mod.ts";

function keysFrom(pairs: UserKeyPairs): HandoverKeys {
  return {
    signing: pairs.signing.privateKey,
    verify: pairs.signing.publicKey,
    decrypt: pairs.encryption.privateKey,
    encrypt: pairs.encryption.publicKey,
  };
}

/** alice's history, newest first: `n` rows with bob. */
function history(n: number): MessageRow[] {
  return Array.from({ length: n }, (_, i) => {
    const mine = i % 2 === 0;
    return {
      id: `msg-${String(i).padStart(6, "0")}`,
      peer: "bob",
      sender: mine ? "alice" : "bob",
      recipient: mine ? "bob" : "alice",
      sentAt: 1_700_000_000_000 + Math.floor(i / 3), // some rows share a send time
      receivedAt: null,
      text: `message ${i} ${crypto.randomUUID()}`,
      via: "p2p" as const,
      status: "delivered" as const,
    };
  }).reverse();
}

/** One transfer between a fresh sender job and a receiver job, over an in-memory channel. */
function transfer(
  keys: HandoverKeys,
  rows: MessageRow[],
  resume?: ConstructorParameters<typeof HandoverReceiveJob>[3],
  tamper: (text: string) => string = (t) => t,
) {
  const stored: MessageRow[] = [];
  const progress: Array<[number, number]> = [];
  const channel = { up: true };
  const later = (fn: () => void) => setTimeout(() => channel.up && fn(), 0);
  const link: { rx?: HandoverReceiveJob } = {};
  const tx = new HandoverSendJob("alice", keys, rows, {
    send: (text) => later(() => link.rx!.receive(text)),
  });
  const rx = link.rx = new HandoverReceiveJob("alice", keys, {
    send: (text) => later(() => tx.receive(tamper(text))),
    onProgress: (done, total) => progress.push([done, total]),
    importRows(batch) {
      stored.push(...batch);
      return Promise.resolve(batch.length);
    },
  }, resume);
  rx.start();
  return {
    tx,
    rx,
    stored,
    progress,
    /** The old device is killed: nothing more passes, and the receiver gives up. */
    kill() {
      channel.up = false;
      rx.abort("Your other device stopped sending");
    },
  };
}

Deno.test("an interrupted transfer resumes after the receiver's cursor in a new one, each row once", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = history(5_000);
  const first = transfer(alice, rows);
  await waitFor(() => first.stored.length >= 1_000, "part of the history arrived");
  first.kill();
  const had = first.stored.length;
  assert(had < rows.length, "interrupted halfway");
  const point = first.rx.resumePoint;
  assert(point !== undefined, "the receiver knows where it stopped");
  assertEquals(point.stored, had);
  assertEquals(point.after.id, first.stored.at(-1)!.id);

  // The old device comes back (a fresh sender, same history): only the rest travels.
  const second = transfer(alice, rows, point);
  const [sent, received] = await Promise.all([second.tx.outcome, second.rx.outcome]);
  assertEquals(sent, { ok: true, rows: rows.length });
  assertEquals(received, { ok: true, rows: rows.length });
  assertEquals(second.stored.length, rows.length - had, "nothing sent twice");
  assertEquals(
    [...first.stored, ...second.stored].map((r) => r.id),
    rows.map((r) => r.id),
    "together, every row once and in order",
  );
  assertEquals(second.progress[0]![1], rows.length, "progress counts the earlier part");
  assertEquals(second.progress.at(-1), [rows.length, rows.length]);
});

Deno.test("a cursor changed in transit makes the acknowledgement fail: the old device keeps its history", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = history(600);
  const first = transfer(alice, rows);
  await waitFor(() => first.stored.length > 0, "a first batch arrived");
  first.kill();
  const point = first.rx.resumePoint!;
  // Someone in the path moves the cursor further, so that rows would be skipped.
  const skipTo = rows[rows.length - 10]!;
  const tampered = transfer(
    alice,
    rows,
    point,
    (text) =>
      text.includes('"handover_hello"')
        ? text.replace(
          /"after":\{[^}]*\}/,
          `"after":{"sentAt":${skipTo.sentAt},"id":"${skipTo.id}"}`,
        )
        : text,
  );
  const sent = await tampered.tx.outcome;
  assert(!sent.ok && /does not verify/.test(sent.reason), JSON.stringify(sent));
  // The same resumption, untampered, completes.
  const honest = transfer(alice, rows, point);
  assertEquals((await honest.tx.outcome).ok, true);
});

Deno.test("a cursor that is no row of the sender's history makes it send everything", async () => {
  const alice = keysFrom((await testKeys()).alice);
  const rows = history(300);
  const elsewhere = { after: { sentAt: rows[100]!.sentAt, id: "not-a-row-here" }, stored: 7 };
  const t = transfer(alice, rows, elsewhere);
  const [sent, received] = await Promise.all([t.tx.outcome, t.rx.outcome]);
  assertEquals(sent, { ok: true, rows: 300 });
  assertEquals(received.ok, true);
  assertEquals(t.stored.map((r) => r.id), rows.map((r) => r.id));
});

/** A reopened old device: alice's keys stored with her replaced session's token. */
async function reopened(replies: Array<number | ServerError>, maxAttempts = 10) {
  const pairs = (await testKeys()).alice;
  const own: OwnKeys = {
    encryption: pairs.encryption.privateKey,
    signing: pairs.signing.privateKey,
    encryptionPublic: await exportPublicKey(pairs.encryption.publicKey),
    signingPublic: await exportPublicKey(pairs.signing.publicKey),
  };
  const claims: Array<{ token: string; challenge: string; signature: string }> = [];
  const started: Array<{ source: HandoverSource; graceMs: number }> = [];
  const state = signal<HandoverState | null>(null);
  const states: Array<HandoverState["phase"] | null> = [];
  state.subscribe((s) => states.push(s?.phase ?? null));
  const fakeHistory = { close() {} } as unknown as History;
  const deferred = new DeferredHandover({
    session: {
      async claimHandover(token, sign) {
        const challenge = crypto.randomUUID().replaceAll("-", "").padEnd(43, "c");
        claims.push({ token, challenge, signature: await sign(challenge) });
        const reply = replies.shift() ?? new ServerError("peer_offline", "offline");
        if (reply instanceof ServerError) throw reply;
        return reply;
      },
    },
    keyStore: {
      listOwn: () => Promise.resolve([{ user: "alice", token: "old-token", keys: own }]),
    },
    openHistory: () => Promise.resolve(fakeHistory),
    handovers: { startSending: (source, graceMs) => void started.push({ source, graceMs }) },
    state,
  }, { firstRetryMs: 1, maxRetryMs: 4, maxAttempts });
  return { deferred, claims, started, state, states, pairs };
}

Deno.test("deferred claim: waits while the new device is offline, then hands over with a signed claim", async () => {
  const r = await reopened([
    new ServerError("peer_offline", "offline"),
    new ServerError("disconnected", "lost"),
    30_000,
  ]);
  assertEquals(await r.deferred.run(new AbortController().signal), "started");
  assertEquals(r.claims.length, 3);
  assert(r.states.includes("waiting"), "it said it was waiting");
  assertEquals(r.started.length, 1);
  assertEquals(r.started[0]!.graceMs, 30_000);
  assertEquals(r.started[0]!.source.info.username, "alice");
  assertEquals(r.started[0]!.source.info.token, "old-token");
  // Each claim is alice's signature over that claim's challenge and the old token.
  const key = await importPublicKey(await exportPublicKey(r.pairs.signing.publicKey), "RSA-PSS");
  for (const c of r.claims) {
    assert(await verifyHandoverClaim("alice", c.token, c.challenge, c.signature, key));
    assert(!(await verifyHandoverClaim("alice", "other", c.challenge, c.signature, key)));
  }
});

Deno.test("deferred claim: nothing to do when the session was not replaced, or the token is refused", async () => {
  for (const code of ["not_superseded", "not_authenticated"] as const) {
    const r = await reopened([new ServerError(code, "no")]);
    assertEquals(await r.deferred.run(new AbortController().signal), "none");
    assertEquals(r.claims.length, 1, "no retry");
    assertEquals(r.started.length, 0);
    assertEquals(r.state.value, null, "nothing shown");
  }
});

Deno.test("deferred claim: gives up after its bound and says the history stays here", async () => {
  const r = await reopened([], 3);
  assertEquals(await r.deferred.run(new AbortController().signal), "gave_up");
  assertEquals(r.claims.length, 3);
  assertEquals(r.state.value?.phase, "failed");
  assert(/still on this device/.test(r.state.value?.text ?? ""), r.state.value?.text);
});

Deno.test("deferred claim: a login on the page stops the retries", async () => {
  const r = await reopened([], 1_000);
  const abort = new AbortController();
  const running = r.deferred.run(abort.signal);
  await waitFor(() => r.claims.length >= 2, "it retries");
  abort.abort();
  assertEquals(await running, "none", "the loop ended");
  assertEquals(r.started.length, 0);
});
