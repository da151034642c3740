/**
 * Offline-first in real browsers: alice and bob chat through a two-server ring; every server
 * stops; alice reloads her page (the service worker serves the app), reads her contacts and
 * stored history under an offline banner, and writes two messages, which show as queued. The
 * servers come back (same ports, same data): both messages reach bob once and in order, and
 * alice's page sees them delivered, without anyone logging in again.
 */
import assert from "node:assert/strict";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startCluster, startServer } from "../support/server_process.ts";
import {
  openApp,
  openChat,
  sendMessage,
  shownStatusTexts,
  signIn,
  storedMessages,
  waitForContact,
  waitForMessages,
  waitForStatuses,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";

const byId = (id: string) => `[data-testid="${id}"]`;
const BEFORE = ["hello before the outage", "and a reply"];
const OFFLINE = ["written offline, one", "written offline, two"];

Deno.test("every server down: a reload shows contacts and history offline; two messages queue, then arrive once and in order", async () => {
  await assertClientBuilt();
  let servers: ServerProcess[] = await startCluster(2);
  const browsers: TestBrowser[] = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const alice = await openApp(browsers[0]!.browser, servers[0]!.url);
    const bob = await openApp(browsers[1]!.browser, servers[1]!.url);
    try {
      await signIn(alice, "alice", "alice-password", true);
      await signIn(bob, "bob", "bob-password-1", true);
      await waitForContact(alice, "bob", true);
      await openChat(alice, "bob");
      await openChat(bob, "alice");
      await sendMessage(alice, BEFORE[0]!);
      await waitForMessages(bob, BEFORE.slice(0, 1));
      await sendMessage(bob, BEFORE[1]!);
      await waitForMessages(alice, BEFORE);
      // The service worker holds the app shell before the servers go.
      await alice.waitForFunction(
        async () => {
          const reg = await navigator.serviceWorker.ready;
          const cache = (await caches.keys()).find((k) => k.startsWith("p2pchat-shell-"));
          return reg.active !== null && cache !== undefined &&
            (await (await caches.open(cache)).keys()).length >= 5;
        },
        { timeout: 40_000 },
      );

      const places = servers.map((s) => ({ port: Number(new URL(s.url).port), dir: s.dataDir }));
      await Promise.all(servers.map((s) => s.stop()));
      servers = [];

      // A reload with no server: the app comes from the service worker, the session from here.
      const started = Date.now();
      await alice.reload({ waitUntil: "load" });
      await alice.waitForSelector(byId("offline-banner"), { timeout: 30_000 });
      await alice.waitForSelector(`${byId("contact-bob")}[data-online="false"]`, {
        timeout: 30_000,
      });
      await openChat(alice, "bob");
      await waitForMessages(alice, BEFORE);
      console.log(`offline reload to history shown: ${Date.now() - started} ms`);
      const banner = await alice.$eval(byId("offline-banner"), (el) => el.textContent ?? "");
      assert.match(banner, /no server is reachable/i);
      assert.equal(
        await alice.$(byId("me")).then((el) => el?.evaluate((e) => e.textContent)),
        "alice",
      );

      for (const text of OFFLINE) await sendMessage(alice, text);
      await waitForMessages(alice, [...BEFORE, ...OFFLINE]);
      const lines = await shownStatusTexts(alice);
      for (const line of lines.slice(-2)) assert.match(line, /queued on this device/);

      // The servers come back where they were, with their data.
      const first = await startServer({ port: places[0]!.port, dataDir: places[0]!.dir });
      servers.push(first);
      servers.push(
        await startServer({ port: places[1]!.port, dataDir: places[1]!.dir, peers: [first.url] }),
      );

      await waitForMessages(bob, [...BEFORE, ...OFFLINE], 90_000);
      await waitForStatuses(alice, "alice", "delivered", 3, 90_000);
      await alice.waitForFunction((sel) => document.querySelector(sel) === null, {
        timeout: 30_000,
      }, byId("offline-banner"));
      // Once each, in order, in bob's stored history too.
      const stored = (await storedMessages(bob, "alice")).map((m) => m.text);
      assert.deepEqual(stored, [...BEFORE, ...OFFLINE]);
    } catch (err) {
      console.error("alice console:", alice.errors, "\nbob console:", bob.errors);
      throw err;
    }
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
