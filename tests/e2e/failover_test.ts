/**
 * Failover without user action: alice's page is served by server 1 of a three-server cluster,
 * bob's by server 2. They chat; then server 1 fails:
 * - killed with SIGKILL (issue 5): her socket closes, and her session must reconnect through
 *   another server of the list it was given at login;
 * - frozen with SIGSTOP (issue 16): its sockets stay open and the kernel still accepts
 *   connections, so no close event ever comes and only the session's liveness check can notice.
 *   How long she was away is printed (not asserted).
 * Either way the header returns to "online" while server 1 is down, bob sees alice online again,
 * and both keep exchanging messages, each shown exactly once and in order on both pages.
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
 * Starts recording every value `conn-status` takes from now on, with the page's time: a failover
 * on loopback can go "connecting" → "online" within a few milliseconds, faster than any polling
 * would see.
 */
async function recordConnStatus(page: Page): Promise<() => Promise<[string, number][]>> {
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="conn-status"]')!;
    const log: [string, number][] = [];
    (globalThis as unknown as { connStatusLog: [string, number][] }).connStatusLog = log;
    new MutationObserver(() => {
      const value = el.getAttribute("data-status") ?? "";
      if (log[log.length - 1]?.[0] !== value) log.push([value, Date.now()]);
    }).observe(el, { attributes: true, attributeFilter: ["data-status"] });
  });
  return () =>
    page.evaluate(() => [
      ...(globalThis as unknown as { connStatusLog: [string, number][] }).connStatusLog,
    ]);
}

/** Console errors other than the expected ones (favicon, sockets to the failed server). */
function unexpectedErrors(errors: string[]): string[] {
  return errors.filter((e) =>
    !/favicon/.test(e) && !/WebSocket (connection to|is closed before)/i.test(e) &&
    !/ERR_CONNECTION_REFUSED/.test(e)
  );
}

/**
 * Alice is still signed in on her page (not sent back to the login form), and the cluster sees
 * her again: each of them has the other online in the contact list.
 */
async function stillSignedInAndSeen(alice: Page, bob: Page): Promise<void> {
  assert.equal(
    await alice.$eval('[data-testid="me"]', (el) => el.textContent),
    "alice",
    "alice must not have been sent back to the login form",
  );
  await waitForContact(bob, "alice", true);
  await waitForContact(alice, "bob", true);
}

/** A conversation whose every message must show once, in order, on both pages. */
function conversation() {
  const expected: string[] = [];
  const exchange = async (from: Page, to: Page, text: string) => {
    await sendMessage(from, text);
    expected.push(text);
    await waitForMessages(to, expected);
    await waitForMessages(from, expected);
  };
  return { expected, exchange };
}

Deno.test("alice's session fails over to another server when her home server is killed", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    const { expected, exchange } = conversation();
    await exchange(alice, bob, "before: hello bob");
    await exchange(bob, alice, "before: hi alice");
    assert.equal(await connStatus(alice), "online");
    const aliceStatuses = await recordConnStatus(alice);

    // Crash alice's home server: no graceful close, no goodbye frame.
    await servers[0]!.stop("SIGKILL");

    // Her socket closes; the session notices and reconnects elsewhere with no user action.
    await waitFor(
      "alice to notice her server is gone",
      async () => (await aliceStatuses()).some(([s]) => s !== "online"),
    );
    await waitFor(
      "alice to be online again through another server",
      async () => (await aliceStatuses()).at(-1)?.[0] === "online",
      60_000,
    );
    const transitions = (await aliceStatuses()).map(([s]) => s);
    assert.ok(!transitions.includes("offline"), `status went ${transitions.join(" → ")}`);
    assert.equal(await connStatus(alice), "online");
    // The page is still the one served by the dead server: only failover can explain this.
    const dead = await fetch(`${servers[0]!.url}/healthz`).then(() => false, () => true);
    assert.equal(dead, true, "server 1 should be dead");
    await stillSignedInAndSeen(alice, bob);

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

Deno.test("alice's session leaves her home server when it freezes (SIGSTOP) and carries on elsewhere", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    const { expected, exchange } = conversation();
    await exchange(alice, bob, "before: hello bob");
    await exchange(bob, alice, "before: hi alice");
    assert.equal(await connStatus(alice), "online");
    const aliceStatuses = await recordConnStatus(alice);

    const home = servers[0]!;
    Deno.kill(home.pid, "SIGSTOP");
    const frozenAt = Date.now();
    try {
      await waitFor(
        "alice to notice her server went silent",
        async () => (await aliceStatuses()).some(([s]) => s !== "online"),
      );
      await waitFor(
        "alice to be online again through another server",
        async () => (await aliceStatuses()).at(-1)?.[0] === "online",
        60_000,
      );
      const transitions = await aliceStatuses();
      const left = transitions.find(([s]) => s !== "online")![1];
      const back = transitions.at(-1)![1];
      console.log(JSON.stringify({
        noticedAfterMs: left - frozenAt,
        onlineAgainAfterMs: back - frozenAt,
        transitions: transitions.map(([s]) => s),
      }));
      assert.ok(
        !transitions.some(([s]) => s === "offline"),
        `status went ${transitions.map(([s]) => s).join(" → ")}`,
      );
      await stillSignedInAndSeen(alice, bob);
      // Still frozen, and the conversation goes on in both directions.
      await exchange(alice, bob, "after: still there, bob?");
      await exchange(bob, alice, "after: yes, still here");
      const stillFrozen = await fetch(`${home.url}/healthz`, { signal: AbortSignal.timeout(500) })
        .then(() => false, () => true);
      assert.equal(stillFrozen, true, "server 1 should still be frozen");
    } finally {
      Deno.kill(home.pid, "SIGCONT");
    }
    for (const page of [alice, bob]) {
      const shown = await shownMessages(page);
      assert.deepEqual(shown.map((m) => m.text), expected);
    }
    assert.deepEqual(unexpectedErrors(alice.errors), []);
    assert.deepEqual(unexpectedErrors(bob.errors), []);
  }));
