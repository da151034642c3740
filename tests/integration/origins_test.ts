/**
 * Which pages may open a server's WebSocket, and which fail-over list a session gets, when the
 * servers' browser-facing URLs (`--browser-url`) differ from their addresses: a page from any
 * ring server's browser origin or a configured origin (`--allowed-origins`) is let in, others are
 * refused with 403; a session's `servers` are the ring's browser URLs.
 */
import assert from "node:assert/strict";
import { startServer, waitFor } from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

/** The HTTP status a WebSocket upgrade to `serverUrl` gets from a page at `origin`. */
async function upgradeStatus(serverUrl: string, origin: string): Promise<number> {
  const url = new URL(serverUrl);
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    const request = `GET /ws HTTP/1.1\r\nHost: ${url.host}\r\nOrigin: ${origin}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
      "Sec-WebSocket-Version: 13\r\n\r\n";
    const bytes = new TextEncoder().encode(request);
    for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
    const buffer = new Uint8Array(1024);
    let text = "";
    while (!text.includes("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1];
    if (!status) throw new Error(`No status line from ${serverUrl}: ${JSON.stringify(text)}`);
    return Number(status);
  } finally {
    conn.close();
  }
}

Deno.test("pages from the ring's browser origins and configured origins may use /ws, others not; sessions get the browser URLs", async () => {
  const a = await startServer({
    env: {
      P2P_BROWSER_URL: "https://a.chat.example",
      P2P_ALLOWED_ORIGINS: "https://chat.example.org",
    },
  });
  const servers = [a];
  try {
    const b = await startServer({
      peers: [a.url],
      env: { P2P_BROWSER_URL: "https://b.chat.example:8443" },
    });
    servers.push(b);
    // A learns B's browser URL from B's hellos.
    await waitFor(
      "A to let pages from B's browser origin in",
      async () => await upgradeStatus(a.url, "https://b.chat.example:8443") === 101,
    );
    assert.equal(await upgradeStatus(a.url, "https://chat.example.org"), 101, "configured");
    assert.equal(await upgradeStatus(a.url, "https://a.chat.example"), 101, "its own");
    assert.equal(await upgradeStatus(b.url, "https://a.chat.example"), 101, "another server's");
    assert.equal(await upgradeStatus(a.url, "https://evil.example"), 403);
    assert.equal(await upgradeStatus(a.url, "https://b.chat.example"), 403, "the port counts");
    assert.equal(await upgradeStatus(b.url, "https://chat.example.org"), 403, "A's option only");

    const client = await TestClient.connect(a.url);
    try {
      await client.request({
        type: "register",
        username: "alice",
        secret: "alice-secret-1",
        ...TEST_ACCOUNT,
      });
      const session = await client.request({
        type: "login",
        username: "alice",
        secret: "alice-secret-1",
      });
      assert.equal(session.type, "session");
      assert.deepEqual(session.type === "session" && session.servers, [
        "https://a.chat.example",
        "https://b.chat.example:8443",
      ]);
    } finally {
      await client.close();
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
});
