/**
 * Contacts without a directory (issues #15 and #16), on real server processes: a connection
 * hears the presence of exactly the names it watches — on its server and across servers — and
 * nobody else's; a watched name without an account is just "offline"; no frame lists users;
 * exact-name key lookups are limited per user, unknown names sooner than known ones.
 */
import assert from "node:assert/strict";
import type { ServerFrame } from "../../shared/mod.ts";
import { type ServerProcess, startCluster, startServer } from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";
import { holdsFor } from "../support/wait.ts";

const PASSWORD = "correct horse battery";

/** The presence notices `client` holds (received and not yet consumed), as "name on/off". */
function notices(client: TestClient): string[] {
  return client.frames.filter((f) => f.type === "presence")
    .map((f) => f.type === "presence" ? `${f.username} ${f.online ? "on" : "off"}` : "");
}

async function register(url: string, username: string): Promise<void> {
  const c = await TestClient.connect(url);
  try {
    const r = await c.request({ type: "register", username, secret: PASSWORD, ...TEST_ACCOUNT });
    assert.equal(r.type, "ok", JSON.stringify(r));
  } finally {
    await c.close();
  }
}

Deno.test("watch: presence reaches only the connections watching the name, across servers", async () => {
  const servers: ServerProcess[] = await startCluster(2);
  const clients: TestClient[] = [];
  const all: ServerFrame[] = [];
  try {
    const [s1, s2] = servers.map((s) => s.url) as [string, string];
    await register(s2, "bob");
    const connect = async (url: string, username: string) => {
      const c = await TestClient.connect(url);
      clients.push(c);
      await c.login(username, PASSWORD);
      return c;
    };
    const alice = await connect(s1, "alice"); // watches bob from the other server
    const carol = await connect(s2, "carol"); // watches bob on his server
    const eve = await connect(s2, "eve"); // watches someone else, on bob's server
    const dave = await connect(s1, "dave"); // never sends a watch list

    // The answer is the same for an account that is offline and for a name without one.
    const watched = await alice.request({ type: "watch", usernames: ["bob", "ghost", "bob"] });
    all.push(watched);
    assert.deepEqual(watched.type === "presence_list" && watched.users, [
      { username: "bob", online: false },
      { username: "ghost", online: false },
    ]);
    assert.equal(
      (await carol.request({ type: "watch", usernames: ["bob"] })).type,
      "presence_list",
    );
    assert.equal(
      (await eve.request({ type: "watch", usernames: ["alice"] })).type,
      "presence_list",
    );

    const bob = await connect(s2, "bob");
    await alice.next((f) => f.type === "presence" && f.username === "bob" && f.online);
    await carol.next((f) => f.type === "presence" && f.username === "bob" && f.online);
    await holdsFor(
      "eve and dave (not watching bob) to hear nothing of him",
      () => [...notices(eve), ...notices(dave)].every((n) => !n.startsWith("bob")),
      1_000,
    );

    // A new list replaces the old one: alice stops hearing of bob, carol still hears.
    const none = await alice.request({ type: "watch", usernames: [] });
    assert.deepEqual(none.type === "presence_list" && none.users, []);
    await bob.close();
    await carol.next((f) => f.type === "presence" && f.username === "bob" && !f.online, 30_000);
    await holdsFor(
      "alice to hear nothing after unwatching",
      () => notices(alice).length === 0,
      1_000,
    );

    // Bad lists change nothing and get typed errors; the whole-directory frame is gone.
    const tooMany = await alice.request({
      type: "watch",
      usernames: Array.from({ length: 1001 }, (_, i) => `user${i}`),
    });
    assert.equal(tooMany.type === "error" && tooMany.code, "bad_frame");
    const badName = await alice.request({ type: "watch", usernames: ["bob", "not a name"] });
    assert.equal(badName.type === "error" && badName.code, "invalid_username");
    const gone = await alice.request({ type: "contacts" });
    assert.equal(gone.type === "error" && gone.code, "unknown_type");

    // No frame any client received lists users beyond what it asked about.
    for (const c of clients) all.push(...c.frames);
    for (const f of all) {
      if (f.type !== "presence_list") continue;
      assert.ok(f.users.every((u) => ["bob", "ghost", "alice"].includes(u.username)));
    }
    assert.ok(
      !all.some((f) => (f as { type: string }).type === "contacts"),
      "no directory frame",
    );
    assert.deepEqual(notices(dave), [], "dave, who watches nobody, heard of nobody");
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("get_keys: lookups are limited per user, unknown names sooner, with the wait said", async () => {
  const server = await startServer({
    env: {
      P2P_KEY_MISS_BURST: "3",
      P2P_KEY_MISSES_PER_MINUTE: "1",
      P2P_KEY_LOOKUP_BURST: "6",
      P2P_KEY_LOOKUPS_PER_MINUTE: "1",
    },
  });
  const clients: TestClient[] = [];
  try {
    const connect = async (username: string, register = true) => {
      const c = await TestClient.connect(server.url);
      clients.push(c);
      await c.login(username, PASSWORD, register);
      return c;
    };
    const alice = await connect("alice");
    const carol = await connect("carol");
    const code = (f: ServerFrame) => f.type === "error" ? f.code : f.type;

    // Three misses use alice's budget of unknown names; then even a known name is refused.
    for (const name of ["nobody1", "nobody2", "nobody3"]) {
      assert.equal(code(await alice.request({ type: "get_keys", username: name })), "unknown_user");
    }
    const limited = await alice.request({ type: "get_keys", username: "carol" });
    assert.equal(code(limited), "rate_limited");
    const seconds = Number(
      /retry after (\d+) s/.exec(limited.type === "error" ? limited.message : "")?.[1],
    );
    assert.ok(seconds >= 1 && seconds <= 60, `a wait of ${seconds} s`);
    // Per user, not per connection: a new connection of alice is still limited.
    await alice.close();
    const alice2 = await connect("alice", false);
    assert.equal(
      code(await alice2.request({ type: "get_keys", username: "carol" })),
      "rate_limited",
    );

    // carol's own budget: six lookups of a known name, then the seventh waits.
    for (let i = 0; i < 6; i++) {
      assert.equal(code(await carol.request({ type: "get_keys", username: "alice" })), "keys");
    }
    assert.equal(
      code(await carol.request({ type: "get_keys", username: "alice" })),
      "rate_limited",
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});
