/**
 * Failover without user action (issue 5): alice's page is served by server 1 of a three-server
 * cluster, bob's by server 2. They chat; server 1 is killed with SIGKILL. Alice's session must
 * reconnect through another server of the list it was given at login (the header returns to
 * "online" while server 1 is dead, and bob sees alice online again), and both keep exchanging
 * messages, each shown exactly once and in order on both pages.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { waitFor } from "../support/server_process.ts";
import {
  sendMessage,
  shownMessages,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";

/** The page's connection status as shown in the header (`conn-status`). */
function connStatus(page: Page): Promise<string | null> {
  return page.$eval('[data-testid="conn-status"]', (el) => el.getAttribute("data-status"));
}

/**
 * Starts recording every value `conn-status` takes from now on: a failover on loopback can go
 * "connecting" → "online" within a few milliseconds, faster than any polling would see.
 */
async function recordConnStatus(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="conn-status"]')!;
    const log: string[] = [];
    (globalThis as unknown as { connStatusLog: string[] }).connStatusLog = log;
    new MutationObserver(() => {
      const value = el.getAttribute("data-status") ?? "";
      if (log[log.length - 1] !== value) log.push(value);
    }).observe(el, { attributes: true, attributeFilter: ["data-status"] });
  });
  return () =>
    page.evaluate(() => [...(globalThis as unknown as { connStatusLog: string[] }).connStatusLog]);
}

/** Console errors other than the expected ones (favicon, the dead server's refused sockets). */
function unexpectedErrors(errors: string[]): string[] {
  return errors.filter((e) =>
    !/favicon/.test(e) && !/WebSocket connection to .* failed/i.test(e) &&
    !/ERR_CONNECTION_REFUSED/.test(e)
  );
}

Deno.test("alice's session fails over to another server when her home server is killed", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    const expected: string[] = [];
    const exchange = async (from: Page, to: Page, text: string) => {
      await sendMessage(from, text);
      expected.push(text);
      await waitForMessages(to, expected);
      await waitForMessages(from, expected);
    };
    await exchange(alice, bob, "before: hello bob");
    await exchange(bob, alice, "before: hi alice");
    assert.equal(await connStatus(alice), "online");
    const aliceStatuses = await recordConnStatus(alice);

    // Crash alice's home server: no graceful close, no goodbye frame.
    await servers[0]!.stop("SIGKILL");

    // Her socket closes; the session notices and reconnects elsewhere with no user action.
    await waitFor(
      "alice to notice her server is gone",
      async () => (await aliceStatuses()).some((s) => s !== "online"),
    );
    await waitFor(
      "alice to be online again through another server",
      async () => (await aliceStatuses()).at(-1) === "online",
      60_000,
    );
    const transitions = await aliceStatuses();
    assert.ok(!transitions.includes("offline"), `status went ${transitions.join(" → ")}`);
    assert.equal(await connStatus(alice), "online");
    // The page is still the one served by the dead server: only failover can explain this.
    const dead = await fetch(`${servers[0]!.url}/healthz`).then(() => false, () => true);
    assert.equal(dead, true, "server 1 should be dead");
    assert.equal(
      await alice.$eval('[data-testid="me"]', (el) => el.textContent),
      "alice",
      "alice must not have been sent back to the login form",
    );
    // The cluster sees alice again: bob's contact list shows her online.
    await waitForContact(bob, "alice", true);
    await waitForContact(alice, "bob", true);

    // The conversation goes on in both directions, each message shown once, in order.
    await exchange(alice, bob, "after: still there, bob?");
    await exchange(bob, alice, "after: yes, still here");
    await exchange(alice, bob, "after: great");
    for (const page of [alice, bob]) {
      const shown = await shownMessages(page);
      assert.deepEqual(shown.map((m) => m.text), expected);
      assert.deepEqual(shown.map((m) => m.from), ["alice", "bob", "alice", "bob", "alice"]);
    }
    assert.equal(await connStatus(alice), "online");
    assert.equal(await connStatus(bob), "online");
    assert.deepEqual(unexpectedErrors(alice.errors), []);
    assert.deepEqual(unexpectedErrors(bob.errors), []);
  }));
