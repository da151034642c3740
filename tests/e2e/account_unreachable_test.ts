/**
 * The servers holding alice's account copies go down (K = 1: two of five servers): her PWA,
 * reloaded, keeps its session and says the servers holding her account are unreachable (never
 * "log in again"), and once they are back it resumes by itself, with no login.
 */
import assert from "node:assert/strict";
import { launchBrowser } from "../support/browser.ts";
import { logOut, openApp, signIn } from "../support/chat_page.ts";
import { accountsHeldBy, waitForCorrectRing } from "../support/ring.ts";
import { type ServerProcess, startCluster, startServer } from "../support/server_process.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import { holdsFor } from "../support/wait.ts";

const ENV = { P2P_REPLICAS: "1", P2P_WRITE_QUORUM: "2" };
const UNREACHABLE = "The servers holding your account are unreachable, retrying…";

const banner = (page: Awaited<ReturnType<typeof openApp>>) =>
  page.$eval('[data-testid="offline-banner"]', (el) => el.textContent ?? "").catch(() => "");

Deno.test("alice's account copies down: the reloaded PWA keeps her session, says why, and resumes by itself", async () => {
  await assertClientBuilt();
  const servers = await startCluster(5, { env: ENV });
  const restarted: ServerProcess[] = [];
  const browser = await launchBrowser();
  try {
    let page = await openApp(browser.browser, servers[0]!.url);
    await signIn(page, "alice", "alice-password", true);
    const holders = servers.filter((s) => accountsHeldBy([s]).has("alice"));
    assert.equal(holders.length, 2, "K + 1 copies");
    const survivors = servers.filter((s) => !holders.includes(s));
    if (holders.includes(servers[0]!)) {
      // Her page must be on a server that stays up: sign in there instead.
      await logOut(page);
      await page.close();
      page = await openApp(browser.browser, survivors[0]!.url);
      await signIn(page, "alice", "alice-password", false);
    }

    await Promise.all(holders.map((h) => h.stop("SIGKILL")));
    await waitForCorrectRing(survivors, "the three survivors to form a ring");
    await page.reload({ waitUntil: "load" });
    await page.waitForFunction(
      (text) => document.querySelector('[data-testid="offline-banner"]')?.textContent === text,
      { timeout: 90_000 },
      UNREACHABLE,
    );
    // Still signed in: her name shows, no login form, for as long as we look.
    await holdsFor(
      "the session kept while the account is unreachable",
      async () =>
        await page.$('[data-testid="login"]') === null &&
        await page.$eval('[data-testid="me"]', (el) => el.textContent) === "alice",
      3_000,
    );

    // The holders come back from their disks: the page resumes on its own.
    for (const h of holders) {
      restarted.push(
        await startServer({
          port: Number(new URL(h.url).port),
          dataDir: h.dataDir,
          peers: survivors.map((s) => s.url),
          env: ENV,
        }),
      );
    }
    await page.waitForFunction(
      () =>
        document.querySelector('[data-testid="conn-status"]')?.getAttribute("data-status") ===
          "online" && !document.querySelector('[data-testid="offline-banner"]'),
      { timeout: 120_000 },
    );
    assert.equal(await banner(page), "");
    assert.equal(await page.$('[data-testid="login"]'), null, "never asked to log in again");
    assert.equal(await page.$eval('[data-testid="me"]', (el) => el.textContent), "alice");
  } finally {
    await browser.close();
    await Promise.all([...servers, ...restarted].map((s) => s.stop().catch(() => {})));
  }
});
