/**
 * One origin: the servers reach one another at one address (`--public-url`, here
 * http://127.0.0.1:P) and browsers at another (`--browser-url`, here http://localhost:P, as a
 * host-mapped port or a name in front of the ring would be). A page loaded from server A's
 * browser origin gets the ring's browser URLs as its fail-over list and, when A dies, goes on
 * through server B: B accepts the WebSocket of a page from A's origin.
 */
import assert from "node:assert/strict";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startServer, waitFor } from "../support/server_process.ts";
import { openApp, signIn } from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";

/** A TCP port free right now on 127.0.0.1. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("a page from server A's browser origin fails over to server B through the ring's browser URLs", async () => {
  await assertClientBuilt();
  const servers: ServerProcess[] = [];
  let browser: TestBrowser | undefined;
  try {
    const [portA, portB] = [freePort(), freePort()];
    const browserUrl = (port: number) => `http://localhost:${port}`;
    const a = await startServer({ port: portA, env: { P2P_BROWSER_URL: browserUrl(portA) } });
    servers.push(a);
    const b = await startServer({
      port: portB,
      peers: [a.url],
      env: { P2P_BROWSER_URL: browserUrl(portB) },
    });
    servers.push(b);
    await waitFor("both servers to see each other", async () => {
      for (const s of servers) {
        const health = await (await fetch(`${s.url}/healthz`)).json();
        if (health.servers.length !== 2) return false;
      }
      return true;
    });

    browser = await launchBrowser();
    const page = await openApp(browser.browser, browserUrl(portA));
    try {
      const cdp = await page.createCDPSession();
      await cdp.send("Network.enable");
      const sockets: string[] = [];
      cdp.on("Network.webSocketCreated", (e) => sockets.push(e.url));
      await signIn(page, "alice", "alice-password", true);
      // The fail-over list holds the ring's browser URLs, not the servers' own addresses.
      await page.waitForFunction(
        (want) => {
          const stored = JSON.parse(sessionStorage.getItem("p2pchat.session") ?? "{}");
          return JSON.stringify([...(stored.servers ?? [])].sort()) === JSON.stringify(want);
        },
        { timeout: 30_000 },
        [browserUrl(portA), browserUrl(portB)].sort(),
      );

      await a.stop("SIGKILL");
      await waitFor(
        "a WebSocket to B's browser URL",
        () => sockets.includes(`ws://localhost:${portB}/ws`),
        60_000,
      );
      await waitFor("alice's session to resume on B", async () => {
        const health = await (await fetch(`${b.url}/healthz`)).json();
        return health.sessions === 1;
      }, 60_000);
      await page.waitForSelector('[data-testid="conn-status"][data-status="online"]', {
        timeout: 60_000,
      });
      assert.equal(
        await page.$eval('[data-testid="me"]', (el) => el.textContent),
        "alice",
        "still signed in, through B",
      );
      const refused = (await (await fetch(`${b.url}/metrics`)).text()).match(
        /^p2pchat_ws_refused_total\{reason="origin"\} (\d+)/m,
      );
      assert.equal(refused, null, "B refused no WebSocket for its origin");
    } catch (err) {
      console.error("page console:", page.errors);
      console.error(
        "stored session:",
        await page.evaluate(() => sessionStorage.getItem("p2pchat.session")),
      );
      throw err;
    }
  } finally {
    await browser?.close();
    await Promise.all(servers.map((s) => s.stop()));
  }
});
