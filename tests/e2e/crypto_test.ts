/**
 * End-to-end encryption in real browsers (DESIGN §4, issue 6): after a live and an offline
 * exchange between alice and bob (three servers), neither the servers' SQLite files (raw bytes
 * and rows) nor any WebSocket frame a browser sent or received holds a password, a message text,
 * or a private key in clear. And an envelope altered in every replica's database while bob is
 * offline is rejected by bob's browser, which shows a `tampered` warning instead of the text.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Page } from "puppeteer-core";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import { waitFor } from "../support/wait.ts";
import {
  openApp,
  openChat,
  recordWebSocketFrames,
  sendMessage,
  signIn,
  waitForContact,
  waitForMessages,
  waitForStatuses,
  waitForTampered,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";

const PASSWORDS = { alice: "alice-secret-password-7", bob: "bob-secret-password-9" };
const LIVE = ["live plaintext from alice: ultramarine", "live plaintext reply: vermilion"];
const OFFLINE = ["offline plaintext one: chartreuse", "offline plaintext two: cerulean"];
const TAMPERED = "offline plaintext to be altered: magenta";

/** Markers of a private key in clear: PEM, PKCS#8 DER (hex and base64 prefixes), JWK fields. */
const PRIVATE_KEY_MARKERS = [
  "PRIVATE",
  "ADANBgkqhkiG9w0BAQEFAAS", // base64 of PKCS#8 "version 0, rsaEncryption, NULL, OCTET STRING"
  "020100300d06092a864886f70d0101010500",
  '"dp":',
  '"qi":',
];

/** Every server's SQLite files as text (raw bytes, WAL included) plus all their rows as JSON. */
function readDatabases(servers: ServerProcess[]): string[] {
  const out: string[] = [];
  for (const s of servers) {
    for (const suffix of ["", "-wal"]) {
      try {
        const bytes = Deno.readFileSync(`${s.dataDir}/node.sqlite${suffix}`);
        out.push(new TextDecoder("latin1").decode(bytes));
        out.push([...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      assert.ok(tables.length > 0, `no tables in ${s.dataDir}`);
      for (const t of tables) {
        const rows = db.prepare(`SELECT * FROM "${String(t.name)}"`).all();
        out.push(JSON.stringify(rows));
      }
    } finally {
      db.close();
    }
  }
  return out;
}

/** Alters the envelope of message `id` in every node's mailbox table; returns rows changed. */
function tamperEverywhere(servers: ServerProcess[], id: string): number {
  let changed = 0;
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`);
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const row = db.prepare("SELECT envelope FROM mailbox WHERE message_id = ?").get(id);
      if (!row) continue;
      const env = JSON.parse(String(row.envelope));
      const c = String(env.ciphertext);
      env.ciphertext = (c[0] === "A" ? "B" : "A") + c.slice(1);
      const r = db.prepare("UPDATE mailbox SET envelope = ? WHERE message_id = ?").run(
        JSON.stringify(env),
        id,
      );
      changed += Number(r.changes);
    } finally {
      db.close();
    }
  }
  return changed;
}

function assertNoSecrets(where: string, texts: string[]): void {
  const secrets = [
    ...Object.values(PASSWORDS),
    ...LIVE,
    ...OFFLINE,
    TAMPERED,
    // Distinctive words of each text, in case a text were split or re-encoded.
    "ultramarine",
    "vermilion",
    "chartreuse",
    "cerulean",
    "magenta",
  ];
  for (const text of texts) {
    for (const s of [...secrets, ...PRIVATE_KEY_MARKERS]) {
      assert.ok(!text.includes(s), `${where} contains ${JSON.stringify(s)}`);
    }
  }
}

/** How many mailbox rows for `recipient` all the nodes' databases hold. */
function mailboxRows(servers: ServerProcess[], recipient: string): number {
  let n = 0;
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const row = db.prepare("SELECT count(*) AS n FROM mailbox WHERE recipient = ?").get(
        recipient,
      );
      n += Number(row?.n ?? 0);
    } finally {
      db.close();
    }
  }
  return n;
}

async function myMessageIds(page: Page, peer: string): Promise<Array<[string, string]>> {
  return await page.evaluate(async (p) => {
    const hook = (globalThis as unknown as {
      p2pchat: { messages(peer: string): Promise<Array<{ id: string; text: string }>> };
    }).p2pchat;
    return (await hook.messages(p)).map((m) => [m.id, m.text] as [string, string]);
  }, peer);
}

Deno.test("servers and WebSocket frames never hold passwords, plaintext or private keys; a tampered envelope is rejected", async () => {
  await assertClientBuilt();
  const servers = await startCluster(3);
  const browsers: TestBrowser[] = [];
  const frames: string[][] = [];
  const pages: Array<Page & { errors: string[] }> = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [a, b] = browsers as [TestBrowser, TestBrowser];
    const alice = await openApp(a.browser, servers[0]!.url);
    const oldBob = await openApp(b.browser, servers[1]!.url);
    pages.push(alice, oldBob);
    frames.push(await recordWebSocketFrames(alice), await recordWebSocketFrames(oldBob));
    await signIn(alice, "alice", PASSWORDS.alice, true);
    await signIn(oldBob, "bob", PASSWORDS.bob, true);
    await waitForContact(alice, "bob", true);
    await waitForContact(oldBob, "alice", true);
    await openChat(alice, "bob");
    await openChat(oldBob, "alice");

    // Live exchange.
    await sendMessage(alice, LIVE[0]!);
    await waitForMessages(oldBob, [LIVE[0]!]);
    await sendMessage(oldBob, LIVE[1]!);
    await waitForMessages(alice, LIVE);
    await waitForStatuses(alice, "alice", "delivered", 1);

    // Fingerprints match across the two browsers.
    await oldBob.click('[data-testid="my-key"]');
    await oldBob.waitForSelector('[data-testid="my-fingerprint-encryption"]');
    await alice.click('[data-testid="show-fingerprint"]');
    await alice.waitForSelector('[data-testid="fingerprint-encryption"]');
    const fp = (page: Page, id: string) =>
      page.$eval(`[data-testid="${id}"]`, (el) => el.textContent ?? "");
    assert.match(await fp(alice, "fingerprint-encryption"), /^([0-9A-F]{4} ){15}[0-9A-F]{4}$/);
    assert.equal(
      await fp(alice, "fingerprint-encryption"),
      await fp(oldBob, "my-fingerprint-encryption"),
    );
    assert.equal(
      await fp(alice, "fingerprint-signing"),
      await fp(oldBob, "my-fingerprint-signing"),
    );

    // Bob goes offline; alice's next messages wait in his mailbox on the servers.
    await oldBob.close();
    await waitForContact(alice, "bob", false);
    for (const text of [...OFFLINE, TAMPERED]) await sendMessage(alice, text);
    await alice.waitForFunction(
      () =>
        document.querySelectorAll(
          '[data-testid="message"][data-via="mailbox"][data-status="sent"]',
        ).length === 3,
      { timeout: 40_000 },
    );
    const ids = await myMessageIds(alice, "bob");
    const tamperedId = ids.find(([, text]) => text === TAMPERED)?.[0];
    assert.ok(tamperedId, "alice's page knows the id of the message to alter");

    // Someone with access to the servers' databases alters that envelope on every replica.
    assert.ok(tamperEverywhere(servers, tamperedId) >= 1, "the envelope was stored somewhere");

    // Alice leaves too, so that her page cannot hand bob the genuine message directly.
    await alice.close();

    // Bob comes back on the third server (another origin: no local history there).
    const bob = await openApp(b.browser, servers[2]!.url);
    pages.push(bob);
    frames.push(await recordWebSocketFrames(bob));
    await signIn(bob, "bob", PASSWORDS.bob, false);
    await openChat(bob, "alice");
    await waitForMessages(bob, OFFLINE);
    await waitForTampered(bob, "alice", tamperedId);
    const shown = await bob.$$eval(
      '[data-testid="message"] .text',
      (els) => els.map((el) => el.textContent ?? ""),
    );
    assert.ok(!shown.includes(TAMPERED), "the altered message is not shown as text");
    // Everything was acknowledged, the altered one too (so that it does not come back).
    await waitFor("bob's mailbox emptied everywhere", () => mailboxRows(servers, "bob") === 0);
    const bobFrames = frames.at(-1)!;
    const beforeReload = bobFrames.length;
    await bob.reload();
    await bob.waitForSelector('[data-testid="me"]', { timeout: 40_000 });
    await openChat(bob, "alice");
    await waitForMessages(bob, OFFLINE);
    // The reloaded page has fetched its mailbox (the only way the message could come back) and
    // the answer did not hold it.
    const mailAfterReload = await waitFor(
      "bob's reloaded page to get its mailbox",
      () => bobFrames.slice(beforeReload).find((f) => f.includes('"type":"mail"')),
    );
    assert.ok(!mailAfterReload.includes(tamperedId), "the servers still hand out the message");
    assert.equal(
      await bob.$$eval('[data-testid="refused"]', (els) => els.length),
      0,
      "the discarded message does not come back after a reload",
    );

    // What crossed the WebSockets, and what the servers store.
    const all = frames.flat();
    assert.ok(all.some((f) => f.includes('"type":"register"') && f.includes('"wrapped"')));
    assert.ok(all.some((f) => f.includes('"type":"mail_send"') && f.includes("ciphertext")));
    assertNoSecrets("a WebSocket frame", all);
    assertNoSecrets("a server's SQLite file", readDatabases(servers));
  } catch (err) {
    for (const p of pages) if (p.errors.length) console.error("page console:", p.errors);
    throw err;
  } finally {
    await Promise.all(browsers.map((x) => x.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
