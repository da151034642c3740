/**
 * The scene of a history hand-over in real browsers, shared by `tests/e2e/handover_test.ts` and
 * `tests/bench/handover_bench.ts`: three servers, three Chromium processes; alice on the first
 * (her old device) chatting with bob on the second, her new device opened on the third. Long
 * histories are made through the page's test hook (`seedHistory`), not by sending messages.
 */
import type { Browser, Page } from "puppeteer-core";
import { launchBrowser, launchFirefox, type TestBrowser } from "./browser.ts";
import { startCluster, type StartOptions } from "./server_process.ts";
import type { ServerProcess } from "./server_process.ts";
import {
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForChannel,
  waitForContact,
  waitForMessages,
} from "./chat_page.ts";

/** A page of the app with its collected console errors. */
export type AppPage = Page & { errors: string[] };

/** The three servers and browsers; {@link HandoverWorld.close} ends them all. */
export interface HandoverWorld {
  servers: ServerProcess[];
  oldAlice: AppPage;
  bob: AppPage;
  /** The browser of alice's old device. */
  oldBrowser: TestBrowser;
  /** The browser alice's new device opens the app in. */
  newBrowser: Browser;
  close(): Promise<void>;
}

/** Options of {@link startHandoverWorld}. */
export interface HandoverWorldOptions extends StartOptions {
  /** The browser of alice's new device. @default "chromium" */
  newDevice?: "chromium" | "firefox";
  /** A profile directory for the old device's browser, so its storage outlives its process. */
  oldProfile?: string;
}

/** Starts the servers and browsers; alice (old device) and bob logged in, chat open. */
export async function startHandoverWorld(
  options: HandoverWorldOptions = {},
): Promise<HandoverWorld> {
  const { newDevice = "chromium", oldProfile, ...serverOptions } = options;
  const servers = await startCluster(3, serverOptions);
  const browsers: TestBrowser[] = [];
  const close = async () => {
    await Promise.all(browsers.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    browsers.push(
      await launchBrowser(oldProfile === undefined ? {} : { userDataDir: oldProfile }),
      newDevice === "firefox" ? await launchFirefox() : await launchBrowser(),
      await launchBrowser(),
    );
    const [a, b, c] = browsers as [TestBrowser, TestBrowser, TestBrowser];
    const oldAlice = await openApp(a.browser, servers[0]!.url);
    const bob = await openApp(c.browser, servers[1]!.url);
    await signIn(oldAlice, "alice", "alice-password", true);
    await signIn(bob, "bob", "bob-password-1", true);
    await waitForContact(oldAlice, "bob", true);
    await openChat(oldAlice, "bob");
    await openChat(bob, "alice");
    await waitForChannel(oldAlice, "bob");
    return { servers, oldAlice, bob, oldBrowser: a, newBrowser: b.browser, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Gives alice's old device `n` older messages with bob (through the test hook) and then sends
 * `newest` live, so that it is the newest message of the history.
 */
export async function seedAliceHistory(
  world: HandoverWorld,
  n: number,
  prefix: string,
  newest: string,
): Promise<void> {
  const added = await world.oldAlice.evaluate(
    (count, p) =>
      (globalThis as unknown as {
        p2pchat: { seedHistory(peer: string, n: number, prefix: string): Promise<number> };
      }).p2pchat.seedHistory("bob", count, p),
    n,
    prefix,
  );
  if (added !== n) throw new Error(`Seeded ${added} of ${n} messages`);
  await sendMessage(world.oldAlice, newest);
  await waitForMessages(world.bob, [newest]);
  // Settled on the old device too (delivered), so its history no longer changes.
  await world.oldAlice.waitForFunction(
    (text) =>
      [...document.querySelectorAll('[data-testid="message"]')].some((el) =>
        el.textContent?.includes(text) && el.getAttribute("data-status") === "delivered"
      ),
    { timeout: 40_000 },
    newest,
  );
}

/** The whole stored history of a page, as a count and a digest over every row. */
export function historyDigest(page: Page): Promise<{ count: number; digest: string }> {
  return page.evaluate(() =>
    (globalThis as unknown as {
      p2pchat: { historyDigest(): Promise<{ count: number; digest: string }> };
    }).p2pchat.historyDigest()
  );
}

/** Names of the page origin's IndexedDB databases. */
export function historyDatabases(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    (globalThis as unknown as { p2pchat: { historyDbs(): Promise<string[]> } }).p2pchat
      .historyDbs()
  );
}

/** When things happened on the new device, in `performance.now()` ms of the test process. */
export interface NewLogin {
  page: AppPage;
  /** "Log in" pressed. */
  startedAt: number;
  /** The app shows alice logged in. */
  loggedInAt: number;
  /** From the login shown until `newest` is shown in the conversation with bob, ms. */
  firstVisibleMs: number;
}

/**
 * Logs alice in on the new device and opens her chat with bob; resolves once `newest` is shown
 * in that conversation.
 */
export async function loginNewAlice(world: HandoverWorld, newest: string): Promise<NewLogin> {
  const page = await openApp(world.newBrowser, world.servers[2]!.url);
  const startedAt = performance.now();
  await signIn(page, "alice", "alice-password", false);
  const loggedInAt = performance.now();
  await openChat(page, "bob");
  await page.waitForFunction(
    (text) =>
      [...document.querySelectorAll('[data-testid="message"]')].some((el) =>
        el.textContent?.includes(text)
      ),
    { timeout: 60_000 },
    newest,
  );
  return { page, startedAt, loggedInAt, firstVisibleMs: performance.now() - loggedInAt };
}
