/**
 * End-to-end trust against a lying server (DESIGN §4, issue 12), in Chromium: alice's page talks
 * to a real server through a proxy (`tests/support/lying_proxy.ts`) that drops WebRTC signals (so
 * every message crosses it) and rewrites the `get_keys` answers for bob — first "no keys", then
 * carol's keys. Bob and carol talk to the server directly.
 *
 * It shows what alice would notice: her first message to bob arrives, sealed; a message in clear
 * that the "server" injects is shown as refused, not as text; once the directory lies, the chat
 * says sending is blocked (and the Send button is disabled) and shows markers where the key
 * changed; the warning is back after a reload; the safety numbers of alice and bob then differ;
 * after alice accepts the new key anyway, sending resumes — sealed for the key she accepted, so
 * bob's browser refuses what it cannot open. At no point did a frame from alice's browser carry a
 * message in clear.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startServer } from "../support/server_process.ts";
import { waitFor } from "../support/wait.ts";
import {
  cspViolations,
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import { type LyingProxy, startLyingProxy } from "../support/lying_proxy.ts";
import { parseLiveFrame } from "../../shared/mod.ts";
import { parseEnvelope } from "../../shared/crypto/mod.ts";

const byId = (id: string) => `[data-testid="${id}"]`;
const FIRST = "first words: honest server";
const INJECTED = "injected in clear: you should never see this";
const BLOCKED = "never sent while the key is in doubt";
const AFTER = "after accepting: sealed for the accepted key";

/** The safety number the page shows in its open key panel. */
async function safetyNumber(page: Page): Promise<{ digits: string; state: string }> {
  await page.waitForSelector(byId("safety-number"), { timeout: 40_000 });
  return await page.$eval(byId("safety"), (el) => ({
    digits: el.querySelector('[data-testid="safety-number"]')?.textContent ?? "",
    state: el.getAttribute("data-state") ?? "",
  }));
}

/** Whether the composer of the open conversation lets the user send. */
function canSend(page: Page): Promise<boolean> {
  return page.$eval(byId("send"), (el) => !(el as HTMLButtonElement).disabled);
}

/** The key markers shown in the open conversation, in order. */
function markers(page: Page): Promise<string[]> {
  return page.$$eval(byId("key-marker"), (els) => els.map((el) => el.getAttribute("data-kind")!));
}

/** Reloads the page (the session resumes) and opens the conversation with `peer` again. */
async function reloadAndOpen(page: Page, peer: string): Promise<void> {
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector(byId("me"), { timeout: 40_000 });
  await openChat(page, peer);
}

/**
 * Every frame alice's browser sent: no text of a message, no chat in clear in a relay, and every
 * mailbox entry a sealed envelope.
 */
function assertNothingInClear(proxy: LyingProxy): void {
  let sealed = 0;
  for (const text of proxy.fromBrowser) {
    for (const secret of [FIRST, BLOCKED, AFTER, "honest server", "accepted key"]) {
      assert.ok(!text.includes(secret), `a frame from alice carries "${secret}": ${text}`);
    }
    const frame = JSON.parse(text);
    if (frame.type === "relay") {
      const live = parseLiveFrame(frame.payload);
      assert.notEqual(live.type, "chat", `a chat message in clear was relayed: ${text}`);
      if (live.type === "sealed") sealed++;
    }
    if (frame.type === "mail_send") {
      for (const m of frame.messages) {
        const envelope = parseEnvelope(JSON.parse(m.envelope));
        assert.equal(envelope.from, "alice");
        sealed++;
      }
    }
  }
  assert.ok(sealed >= 2, `alice sent ${sealed} sealed messages through the proxy`);
}

Deno.test("a lying server can neither downgrade nor swap keys unnoticed: sending stops until the user accepts", async () => {
  await assertClientBuilt();
  const server: ServerProcess = await startServer();
  const proxy = await startLyingProxy(server.url);
  proxy.dropSignals = true;
  const browsers: TestBrowser[] = [];
  const pages: Array<Page & { errors: string[] }> = [];
  try {
    // One browser each: a page in a background tab does not answer clicks.
    browsers.push(...await Promise.all([launchBrowser(), launchBrowser(), launchBrowser()]));
    const [alice, bob, carol] = await Promise.all([
      openApp(browsers[0]!.browser, proxy.url),
      openApp(browsers[1]!.browser, server.url),
      openApp(browsers[2]!.browser, server.url),
    ]);
    pages.push(alice, bob, carol);
    const t0 = Date.now();
    const step = (what: string) =>
      console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
    await Promise.all([
      signIn(alice, "alice", "alice-password-1", true),
      signIn(bob, "bob", "bob-password-12", true),
      signIn(carol, "carol", "carol-password-1", true),
    ]);
    step("signed in");
    await waitForContact(alice, "bob", true);
    await waitForContact(bob, "alice", true);
    await openChat(alice, "bob");
    await openChat(bob, "alice");

    step("chats open");
    // Honest: bob's key is pinned on first use, and the message arrives (sealed, relayed).
    await sendMessage(alice, FIRST);
    await waitForMessages(bob, [FIRST]);
    const honest = await (async () => {
      await alice.click(byId("show-fingerprint"));
      return await safetyNumber(alice);
    })();
    assert.equal(honest.state, "pinned");
    await bob.click(byId("show-fingerprint"));
    assert.equal((await safetyNumber(bob)).digits, honest.digits, "the same number on both sides");

    step("first message arrived");
    // The "server" relays a chat message in clear, claiming bob wrote it: refused, and shown so.
    const plainId = `plain-${crypto.randomUUID()}`;
    proxy.injectToBrowser({
      v: 1,
      type: "relay",
      from: "bob",
      payload: JSON.stringify({
        v: 1,
        type: "chat",
        id: plainId,
        from: "bob",
        to: "alice",
        sentAt: Date.now(),
        text: INJECTED,
      }),
    });
    await alice.waitForSelector(`${byId("refused")}[data-id="${plainId}"]`, { timeout: 40_000 });
    assert.ok(!(await alice.evaluate(() => document.body.innerText)).includes(INJECTED));

    step("injected plaintext refused");
    // Downgrade: the directory now says bob has no keys. Sending stops.
    await proxy.lieAbout("bob", { kind: "no_keys" });
    await reloadAndOpen(alice, "bob");
    await alice.waitForSelector(byId("key-changed"), { timeout: 40_000 });
    assert.ok(proxy.rewritten.some(([u, k]) => u === "bob" && k === "no_keys"));
    assert.equal(await canSend(alice), false, "no Send while bob's key is in doubt");
    assert.deepEqual(await markers(alice), ["missing"]);

    step("no keys: blocked");
    // Substitution: the directory now gives carol's keys as bob's.
    await proxy.lieAbout("bob", { kind: "keys_of", user: "carol" });
    await reloadAndOpen(alice, "bob");
    await waitFor(
      "the change to another key to show",
      async () => JSON.stringify(await markers(alice)) === '["missing","changed"]',
    );
    assert.equal(await canSend(alice), false);
    assert.ok(proxy.rewritten.some(([u, k]) => u === "bob" && k === "keys_of"));
    // The script hook is refused too: nothing is stored or sent.
    const sentBefore = proxy.fromBrowser.length;
    await alice.evaluate(
      (text) =>
        (globalThis as unknown as { p2pchat: { send(t: string): Promise<void> } }).p2pchat.send(
          text,
        ),
      BLOCKED,
    );
    await alice.waitForFunction(
      () => /changed/.test(document.querySelector(".toast")?.textContent ?? ""),
      { timeout: 20_000 },
    );
    const stored = await alice.evaluate(async () =>
      (await (globalThis as unknown as {
        p2pchat: { messages(p: string): Promise<Array<{ text: string }>> };
      }).p2pchat.messages("bob")).map((m) => m.text)
    );
    assert.deepEqual(stored, [FIRST], "the blocked message was not stored");
    assert.ok(
      proxy.fromBrowser.slice(sentBefore).every((t) => !/"type":"(relay|mail_send)"/.test(t)),
      "nothing went to bob",
    );

    step("other keys: blocked");
    // The warning survives a reload: it is kept in IndexedDB, not in memory, and shows in the
    // contact list before the conversation is opened.
    await alice.reload({ waitUntil: "load" });
    await alice.waitForSelector(`${byId("contact-bob")} .key-changed`, { timeout: 40_000 });
    await openChat(alice, "bob");
    await alice.waitForSelector(byId("key-changed"), { timeout: 40_000 });
    const pending = await safetyNumber(alice);
    assert.equal(pending.state, "pending");
    assert.notEqual(pending.digits, honest.digits, "comparing the numbers shows the lie");
    assert.equal(await canSend(alice), false);

    step("warning after reload");
    // Alice accepts anyway: sending resumes, sealed for the key she accepted (carol's), which
    // bob's browser cannot open and refuses.
    await alice.click(byId("accept-key"));
    await alice.waitForFunction(
      (sel) => !document.querySelector(sel),
      { timeout: 20_000 },
      byId("key-changed"),
    );
    assert.equal(await canSend(alice), true);
    await sendMessage(alice, AFTER);
    await waitFor("alice's message to leave", async () => {
      const rows = await alice.evaluate(async () =>
        await (globalThis as unknown as {
          p2pchat: { messages(p: string): Promise<Array<{ text: string; status: string }>> };
        }).p2pchat.messages("bob")
      );
      return rows.some((r) => r.text === AFTER && r.status !== "sending");
    });
    await bob.waitForSelector(`${byId("refused")}[data-from="alice"]`, { timeout: 40_000 });
    assert.match(
      await bob.$eval(byId("refused"), (el) => el.textContent ?? ""),
      /not encrypted for you/,
    );
    await waitForMessages(bob, [FIRST]);
    assert.deepEqual(await markers(alice), ["missing", "changed", "accepted"]);
    assertNothingInClear(proxy);
    // The key panel (QR code included) runs under the page's Content-Security-Policy.
    assert.deepEqual(await cspViolations(alice), []);
    step("done");
  } catch (err) {
    for (const [i, p] of pages.entries()) console.error(`page ${i} console:`, p.errors);
    throw err;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await proxy.stop();
    await server.stop();
  }
});
