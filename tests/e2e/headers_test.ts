/**
 * The PWA runs under its own Content-Security-Policy (no inline script, no framing, WebSockets
 * only to the ring's servers): two users register, see each other, and chat over a data channel
 * with no violation reported by either page; a page from another site cannot open `/ws`.
 */
import assert from "node:assert/strict";
import { cspViolations, sendMessage, waitForMessages } from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";

Deno.test("the PWA works under its Content-Security-Policy, with no violation", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    const res = await fetch(`${servers[0]!.url}/`);
    await res.body?.cancel();
    const csp = res.headers.get("content-security-policy") ?? "";
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(res.headers.get("referrer-policy"), "no-referrer");
    await sendMessage(alice, "under a strict policy");
    await waitForMessages(bob, ["under a strict policy"]);
    await sendMessage(bob, "still fine");
    await waitForMessages(alice, ["under a strict policy", "still fine"]);
    assert.deepEqual(await cspViolations(alice), []);
    assert.deepEqual(await cspViolations(bob), []);
    // A page of another site may not use the servers from a visitor's browser.
    const evil = await alice.evaluate(async (url) => {
      const ws = new WebSocket(url.replace(/^http/, "ws") + "/ws");
      return await new Promise<string>((resolve) => {
        ws.onopen = () => resolve("open");
        ws.onerror = () => resolve("refused");
      });
    }, servers[1]!.url);
    assert.equal(evil, "open", "the app's own page may reach another server of the ring");
    const refused = await fetch(`${servers[0]!.url}/ws`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
        origin: "https://evil.example",
      },
    });
    assert.equal(refused.status, 403);
    assert.match(await refused.text(), /refused/);
  }));
