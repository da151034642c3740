/**
 * ICE servers from a real server process: a logged-in browser gets the configured STUN URLs and
 * TURN URLs with TURN REST credentials that a TURN server holding the same secret accepts
 * (`expiry:user`, base64 HMAC-SHA1), expiring after the configured lifetime; without login there
 * are none; a server without TURN configuration hands out an empty list.
 */
import assert from "node:assert/strict";
import { startServer, withServers } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";

const TURN_SECRET = "integration-turn-secret-0123";

async function expectedCredential(username: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(TURN_SECRET),
    { name: "HMAC", hash: "SHA-1" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(username));
  return btoa(String.fromCharCode(...new Uint8Array(mac)));
}

Deno.test("ice servers: a session gets STUN and time-limited TURN credentials the TURN server can check", async () => {
  const server = await startServer({
    env: {
      P2P_STUN_URLS: "stun:198.51.100.7:3478",
      P2P_TURN_URLS: "turn:198.51.100.7:3478?transport=udp,turn:198.51.100.7:3478?transport=tcp",
      P2P_TURN_SECRET: TURN_SECRET,
      P2P_TURN_TTL_SECONDS: "600",
    },
  });
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    const client = await TestClient.connect(server.url);
    clients.push(client);
    const refused = await client.request({ type: "ice_servers" });
    assert.equal(refused.type, "error");
    assert.equal((refused as { code: string }).code, "not_authenticated");

    await client.login("alice", "alice-secret-1");
    const before = Date.now();
    const reply = await client.request({ type: "ice_servers" });
    assert.equal(reply.type, "ice_servers", JSON.stringify(reply));
    if (reply.type !== "ice_servers") return;
    const [stun, turn] = reply.iceServers;
    assert.deepEqual(stun, { urls: ["stun:198.51.100.7:3478"] });
    assert.ok(turn);
    assert.deepEqual(turn.urls, [
      "turn:198.51.100.7:3478?transport=udp",
      "turn:198.51.100.7:3478?transport=tcp",
    ]);
    const match = turn.username?.match(/^(\d+):alice$/);
    assert.ok(match, `username ${turn.username} is "expiry:alice"`);
    const expiry = Number(match[1]) * 1000;
    assert.equal(reply.expiresAt, expiry);
    // Ten minutes from now (whole seconds; the clock ran while the reply travelled).
    assert.ok(expiry > before + 590_000 && expiry <= Date.now() + 600_000, `expiry ${expiry}`);
    assert.equal(turn.credential, await expectedCredential(turn.username!));
  });
});

Deno.test("ice servers: without STUN or TURN configured the list is empty", async () => {
  const server = await startServer();
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    const client = await TestClient.connect(server.url);
    clients.push(client);
    await client.login("bob", "bob-secret-12");
    const reply = await client.request({ type: "ice_servers" });
    const { reqId: _reqId, ...rest } = reply as { reqId: number };
    assert.deepEqual(rest, { v: 1, type: "ice_servers", iceServers: [], expiresAt: 0 });
  });
});
