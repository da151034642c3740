/**
 * Deferred and resumed hand-overs in real browsers (DESIGN §4): alice's old Chromium keeps its
 * profile directory, so that when its process is killed and started again its IndexedDB (history
 * and unlocked keys) is still there. Reopened, the app claims the hand-over it still owes,
 * signing the server's challenge with alice's key, and hands the history to her new device as a
 * live hand-over would: after a new login while it was offline (the new device said where the
 * history was), and after a hand-over cut halfway by killing it. A third test keeps a read-only
 * copy on the old device, as its setting asks.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "puppeteer-core";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import type { StartOptions } from "../support/server_process.ts";
import type { ServerProcess } from "../support/server_process.ts";
import {
  clickWhenLaidOut,
  openApp,
  signIn,
  waitForContact,
  waitForHandover,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import {
  type AppPage,
  type HandoverWorld,
  historyDatabases,
  historyDigest,
  seedAliceHistory,
  startHandoverWorld,
} from "../support/handover_world.ts";

/** The scene: alice's old Chromium with a profile that outlives its process, bob, a new one. */
interface Scene {
  servers: ServerProcess[];
  profile: string;
  old: TestBrowser;
  world: HandoverWorld;
  /** Kills the old browser's process (its profile stays). */
  killOld(): void;
  /** Starts the old browser again on the same profile and opens the app on the first server. */
  reopenOld(): Promise<AppPage>;
  close(): Promise<void>;
}

async function startScene(
  options: StartOptions & { newDevice?: "chromium" | "firefox" } = {},
): Promise<Scene> {
  const profile = await Deno.makeTempDir({ prefix: "p2pchat-old-alice-" });
  const removeProfile = () => Deno.remove(profile, { recursive: true }).catch(() => {});
  const started = await startHandoverWorld({ ...options, oldProfile: profile })
    .catch(async (err: unknown) => {
      await removeProfile();
      throw err;
    });
  const relaunched: TestBrowser[] = [];
  const close = async () => {
    await Promise.all(relaunched.map((b) => b.close()));
    await started.close();
    await removeProfile();
  };
  const old = started.oldBrowser;
  return {
    servers: started.servers,
    profile,
    old,
    world: { ...started, close },
    killOld: () => old.kill!(),
    async reopenOld() {
      // The killed process may leave its profile lock behind for a moment.
      const browser = await launchBrowser({ userDataDir: profile });
      relaunched.push(browser);
      return await openApp(browser.browser, started.servers[0]!.url);
    },
    close,
  };
}

/** Waits for the hand-over status in `phase`; returns its text. */
async function waitForPhase(page: Page, role: string, phase: string, timeoutMs = 60_000) {
  const sel = `[data-testid="handover-status"][data-role="${role}"][data-phase="${phase}"]`;
  try {
    await page.waitForSelector(sel, { timeout: timeoutMs });
  } catch {
    const shown = await page.$eval('[data-testid="handover-status"]', (el) => el.outerHTML)
      .catch(() => "nothing");
    throw new Error(`Expected the hand-over ${role} ${phase}, page shows ${shown}`);
  }
  return await page.$eval(sel, (el) => el.textContent ?? "");
}

/** Logs alice in on her new device (third server); returns the page. */
async function loginNew(browser: Browser, server: ServerProcess): Promise<AppPage> {
  const page = await openApp(browser, server.url);
  await signIn(page, "alice", "alice-password", false);
  return page;
}

/** Whether any of the page origin's IndexedDB stores holds `text` anywhere in a record. */
function idbHoldsText(page: Page, text: string): Promise<boolean> {
  return page.evaluate(async (needle) => {
    const seen = new WeakSet<object>();
    const has = (v: unknown): boolean => {
      if (typeof v === "string") return v.includes(needle);
      if (v === null || typeof v !== "object" || seen.has(v)) return false;
      seen.add(v);
      return Object.values(v).some(has);
    };
    for (const { name } of await indexedDB.databases()) {
      if (!name) continue;
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const r = indexedDB.open(name);
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      for (const store of [...db.objectStoreNames]) {
        const all = await new Promise<unknown[]>((resolve, reject) => {
          const r = db.transaction(store).objectStore(store).getAll();
          r.onsuccess = () => resolve(r.result);
          r.onerror = () => reject(r.error);
        });
        if (all.some(has)) {
          db.close();
          return true;
        }
      }
      db.close();
    }
    return false;
  }, text);
}

Deno.test("old browser offline at the new login: the new one says where the history is, and gets it when the old one is reopened", async () => {
  await assertClientBuilt();
  const scene = await startScene();
  const { world } = scene;
  const pages: Array<{ name: string; errors: string[] }> = [];
  try {
    const n = 2_000;
    const newest = "the newest message, from alice";
    await seedAliceHistory(world, n, "old", newest);
    const before = await historyDigest(world.oldAlice);
    assert.equal(before.count, n + 1);

    // The old device goes away without a word (its process is killed), then alice logs in anew.
    scene.killOld();
    await waitForContact(world.bob, "alice", false);
    const newAlice = await loginNew(world.newBrowser, world.servers[2]!);
    pages.push({ name: "new alice", errors: newAlice.errors });
    const deferred = await waitForPhase(newAlice, "receiving", "deferred");
    assert.match(deferred, /history is on your other device/);
    assert.match(deferred, /move here automatically when that device is next online/);
    // It still says so after a reload.
    await newAlice.reload({ waitUntil: "load" });
    assert.match(await waitForPhase(newAlice, "receiving", "deferred"), /other device/);

    // The old browser starts again on its profile: the app hands the history over by itself.
    const reopened = await scene.reopenOld();
    pages.push({ name: "reopened old alice", errors: reopened.errors });
    const sent = await waitForHandover(reopened, "sending", "done", 120_000);
    assert.match(sent, new RegExp(`${n + 1} messages`));
    assert.match(sent, /deleted from this one/);
    const received = await waitForHandover(newAlice, "receiving", "done", 60_000);
    assert.match(received, new RegExp(`${n + 1} messages`));
    assert.deepEqual(await historyDigest(newAlice), before, "the same history, row for row");
    assert.match(scene.servers[0]!.logs(), /handover_claimed/);

    // Moved, not copied: the old browser keeps no message text and no keys.
    await reopened.waitForFunction(
      async () => !(await indexedDB.databases()).some((d) => d.name === "p2pchat-history-alice"),
      { timeout: 40_000 },
    );
    assert.deepEqual(
      (await historyDatabases(reopened)).filter((name) => name.startsWith("p2pchat-hist")),
      [],
    );
    assert.equal(await idbHoldsText(reopened, newest), false, "no message text in IndexedDB");
    assert.equal(await idbHoldsText(reopened, "old 17"), false, "no seeded text either");
    // The new device no longer says the history is elsewhere, after a reload too.
    await newAlice.reload({ waitUntil: "load" });
    await newAlice.waitForFunction(
      () => document.querySelector('[data-testid="me"]')?.textContent === "alice",
      { timeout: 40_000 },
    );
    assert.equal(await newAlice.$('[data-testid="handover-status"][data-phase="deferred"]'), null);
    for (const page of pages) {
      assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), [], `${page.name} errors`);
    }
  } catch (err) {
    for (const page of pages) console.error(`${page.name} console:`, page.errors);
    for (const sv of scene.servers) {
      const lines = sv.logs().split("\n").filter((l) => /session|handover|claim/.test(l));
      console.error(`server ${sv.url}:\n${lines.slice(-30).join("\n")}`);
    }
    throw err;
  } finally {
    await scene.close();
  }
});

Deno.test("a hand-over cut by killing the old browser halfway resumes when it is reopened (new device: Firefox)", async () => {
  await assertClientBuilt();
  // A short grace: the old browser is reopened well after it ended.
  const scene = await startScene({
    env: { P2P_HANDOVER_GRACE_SECONDS: "4" },
    newDevice: "firefox",
  });
  const { world } = scene;
  try {
    const n = 30_000;
    const newest = "the newest message, from alice";
    await seedAliceHistory(world, n, "old", newest);
    const before = await historyDigest(world.oldAlice);
    const newAlice = await loginNew(world.newBrowser, world.servers[2]!);
    // Part of the history arrived: the old browser's process is killed.
    await newAlice.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid="handover-status"]');
        return Number(el?.getAttribute("data-done") ?? 0) > 0;
      },
      { timeout: 60_000, polling: 10 },
    );
    scene.killOld();
    const failed = await waitForPhase(newAlice, "receiving", "failed", 90_000);
    const m = failed.match(/(\d+) of (\d+) messages arrived/);
    assert(m, `the failure says what arrived: ${failed}`);
    const arrived = Number(m[1]);
    assert(arrived > 0 && arrived < n + 1, `${arrived} of ${n + 1} arrived before the kill`);
    assert.match(failed, /moves here automatically/);

    // Reopened (after the grace is long over), it resumes and completes.
    const reopened = await scene.reopenOld();
    const sent = await waitForHandover(reopened, "sending", "done", 120_000);
    assert.match(sent, new RegExp(`${n + 1} messages`));
    const received = await waitForHandover(newAlice, "receiving", "done", 60_000);
    assert.match(received, new RegExp(`${n + 1} messages`));
    assert.deepEqual(await historyDigest(newAlice), before, "complete, no duplicates");
    assert.equal(await idbHoldsText(reopened, newest), false, "no message text left behind");
    // It went on from where it stopped: the reopened device's first progress report (rows the
    // new device holds) already counts what arrived before the kill.
    const logs = scene.servers[0]!.logs();
    const afterClaim = logs.slice(logs.lastIndexOf("handover_claimed"));
    const first = afterClaim.match(/"handover_extended"[^\n]*"done":(\d+)/);
    assert(first, "the reopened device reported progress");
    assert(Number(first[1]) > arrived, `resumed after ${arrived}: first report ${first[1]}`);
  } finally {
    await scene.close();
  }
});

Deno.test("with the setting on, the old browser keeps a read-only copy and cannot send", async () => {
  await assertClientBuilt();
  const scene = await startScene();
  const { world } = scene;
  try {
    const n = 500;
    const newest = "the newest message, from alice";
    await seedAliceHistory(world, n, "old", newest);
    const before = await historyDigest(world.oldAlice);
    // The setting, by its checkbox (under "My key").
    await clickWhenLaidOut(world.oldAlice, '[data-testid="my-key"]');
    await clickWhenLaidOut(world.oldAlice, '[data-testid="keep-copy-setting"]');
    assert.equal(
      await world.oldAlice.$eval(
        '[data-testid="keep-copy-setting"]',
        (el) => (el as HTMLInputElement).checked,
      ),
      true,
    );
    const newAlice = await loginNew(world.newBrowser, world.servers[2]!);
    const sent = await waitForHandover(world.oldAlice, "sending", "done", 60_000);
    assert.match(sent, /read-only copy/);
    await waitForHandover(newAlice, "receiving", "done", 60_000);
    assert.deepEqual(await historyDigest(newAlice), before);

    // The old browser shows the copy, says it is read-only, and has no way to send.
    const old = world.oldAlice;
    await old.waitForSelector('[data-testid="readonly-statement"]', { timeout: 40_000 });
    const statement = await old.$eval(
      '[data-testid="readonly-statement"]',
      (el) => el.textContent ?? "",
    );
    assert.match(statement, /Read-only copy/);
    assert.match(statement, /cannot send messages/);
    await old.click('[data-testid="readonly-contact"][data-username="bob"]');
    await old.waitForFunction(
      (text) =>
        [...document.querySelectorAll('[data-testid="readonly-message"]')].some((el) =>
          el.textContent?.includes(text)
        ),
      { timeout: 20_000 },
      newest,
    );
    assert.equal(await old.$('[data-testid="chat-input"]'), null, "no message field");
    assert.equal(await old.$('[data-testid="send"]'), null, "no send button");
    const readOnly = await old.evaluate(() =>
      (globalThis as unknown as {
        p2pchat: { readOnlyDigest(): Promise<{ count: number; digest: string }> };
      }).p2pchat.readOnlyDigest()
    );
    assert.deepEqual(readOnly, before, "the copy is the whole history");
    // Still there, and still read-only, after a reload.
    await old.reload({ waitUntil: "load" });
    await old.waitForSelector('[data-testid="readonly-statement"]', { timeout: 40_000 });
    assert.equal(await old.$('[data-testid="chat-input"]'), null);
  } finally {
    await scene.close();
  }
});
