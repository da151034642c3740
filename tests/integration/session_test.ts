/**
 * Sessions and abuse controls against real server processes: one active session per user (a new
 * login supersedes the old one, on the same or another server, and the old token is refused),
 * expired tokens, the server stamping `from`, login and frame rate limits, and HTTPS/WSS with a
 * certificate made by openssl (servers calling each other over HTTPS too).
 */
import assert from "node:assert/strict";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
  withServers,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";
import type { ServerFrame } from "../../shared/mod.ts";

function errorOf(frame: ServerFrame): { code: string; message: string } {
  assert.equal(frame.type, "error", `expected an error, got ${JSON.stringify(frame)}`);
  return frame as { code: string; message: string };
}

/** Deno's WebSocket takes an HttpClient (custom CA); the DOM typings do not know it. */
const DenoWebSocket = WebSocket as unknown as new (
  url: string,
  options: { client: Deno.HttpClient },
) => WebSocket;

Deno.test("session: a new login supersedes the old session on another server and the same one", async () => {
  const servers = await startCluster(2);
  const [s1, s2] = servers as [ServerProcess, ServerProcess];
  const clients: TestClient[] = [];
  await withServers(servers, clients, async () => {
    const first = await TestClient.connect(s1.url);
    clients.push(first);
    const old = await first.login("alice", "alice-secret-1");
    assert.equal(old.type, "session");

    // Second device, on the other server.
    const second = await TestClient.connect(s2.url);
    clients.push(second);
    const current = await second.login("alice", "alice-secret-1", false);
    const told = await first.next((f) => f.type === "superseded");
    assert.deepEqual(told, {
      v: 1,
      type: "superseded",
      message: "Signed in elsewhere: this session was replaced by a newer login",
      handoverMs: 30_000,
    });
    // It is no session any more: open only for the history hand-over (tests/integration/
    // handover_test.ts), then closed.
    assert.equal(
      errorOf(await first.request({ type: "watch", usernames: [] })).code,
      "not_authenticated",
    );

    // The old token is refused everywhere (typed error); the new one works everywhere.
    for (const s of servers) {
      const c = await TestClient.connect(s.url);
      clients.push(c);
      const refused = errorOf(
        await c.request({ type: "resume", token: old.type === "session" ? old.token : "" }),
      );
      assert.equal(refused.code, "not_authenticated");
      assert.match(refused.message, /Signed in elsewhere/);
    }
    const onS1 = await TestClient.connect(s1.url);
    clients.push(onS1);
    const resumed = await onS1.request({
      type: "resume",
      token: current.type === "session" ? current.token : "",
    });
    assert.equal(resumed.type, "session");

    // A third login on s2 supersedes both connections of the second session.
    const third = await TestClient.connect(s2.url);
    clients.push(third);
    await third.login("alice", "alice-secret-1", false);
    await second.next((f) => f.type === "superseded");
    await onS1.next((f) => f.type === "superseded");
    const contacts = await third.request({ type: "watch", usernames: ["bob"] });
    assert.equal(contacts.type, "presence_list");
  });
});

Deno.test("session: an expired token is refused with session_expired", async () => {
  const server = await startServer({ env: { P2P_SESSION_TTL_SECONDS: "1" } });
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    const a = await TestClient.connect(server.url);
    clients.push(a);
    const session = await a.login("alice", "alice-secret-1");
    // The expiry is what is tested: the token was issued before this reply, so it has expired
    // 1 s (its time to live) after now, however slow the machine.
    await new Promise((r) => setTimeout(r, 1_300));
    const b = await TestClient.connect(server.url);
    clients.push(b);
    const refused = errorOf(
      await b.request({ type: "resume", token: session.type === "session" ? session.token : "" }),
    );
    assert.equal(refused.code, "session_expired");
    // Acting without a session is refused too.
    assert.equal(
      errorOf(await b.request({ type: "watch", usernames: ["alice"] })).code,
      "not_authenticated",
    );
  });
});

Deno.test("session: the server stamps `from`; nobody can signal as another user", async () => {
  const servers = await startCluster(2);
  const clients: TestClient[] = [];
  await withServers(servers, clients, async () => {
    const alice = await TestClient.connect(servers[0]!.url);
    const bob = await TestClient.connect(servers[1]!.url);
    clients.push(alice, bob);
    await alice.login("alice", "alice-secret-1");
    await bob.login("bob", "bob-secret-12");
    await waitFor("alice online for bob", async () => {
      const c = await bob.request({ type: "watch", usernames: ["alice"] });
      return c.type === "presence_list" && c.users.some((u) => u.username === "alice" && u.online);
    });
    bob.send({ type: "signal", to: "alice", from: "carol", data: { type: "offer", sdp: "x" } });
    const got = await alice.next((f) => f.type === "signal");
    assert.equal(got.type === "signal" && got.from, "bob", "the server's stamp wins");
    bob.send({ type: "relay", to: "alice", from: "carol", payload: "hi" });
    const relayed = await alice.next((f) => f.type === "relay");
    assert.equal(relayed.type === "relay" && relayed.from, "bob");
    // The servers' reserved signal keys cannot be forged by a browser.
    bob.send({ type: "signal", to: "alice", data: { "p2pchat:superseded": { sessionId: "x" } } });
    assert.equal(errorOf(await bob.next((f) => f.type === "error")).code, "bad_frame");
    // A later signal takes the same path: once it arrives, the forged one would have too.
    bob.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "after" } });
    await alice.next((f) => f.type === "signal" && f.data.sdp === "after");
    assert.equal(alice.frames.some((f) => f.type === "superseded"), false);
    assert.equal(
      alice.frames.some((f) => f.type === "signal" && "p2pchat:superseded" in f.data),
      false,
    );
  });
});

Deno.test("abuse: wrong passwords are rate limited per username and per address", async () => {
  const server = await startServer();
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    const c = await TestClient.connect(server.url);
    clients.push(c);
    await c.login("alice", "alice-secret-1");
    const started = performance.now();
    for (let i = 0; i < 5; i++) {
      const r = errorOf(
        await c.request({ type: "login", username: "alice", secret: "wrong-pass" }),
      );
      assert.equal(r.code, "wrong_credentials");
    }
    // Even the right password waits now.
    const limited = errorOf(
      await c.request({ type: "login", username: "alice", secret: "alice-secret-1" }),
    );
    assert.equal(limited.code, "rate_limited");
    assert.match(limited.message, /try again in \d+ s/);
    // Other usernames are still allowed from this address, up to 20 failures in all (the
    // address bucket refills one attempt every 3 s, so a slow machine earns a few more).
    const guesses = await Promise.all(
      Array.from(
        { length: 25 },
        (_, i) => c.request({ type: "login", username: `guess${i}`, secret: "wrong-pass" }, 60_000),
      ),
    );
    const elapsedMs = performance.now() - started;
    const codes = guesses.map((g) => errorOf(g).code);
    const checked = codes.filter((code) => code === "wrong_credentials").length;
    const allowance = 20 - 5 + Math.floor(elapsedMs / 3000) + 1;
    assert.ok(checked >= 15, `only ${checked} other usernames were tried: ${codes.join(",")}`);
    assert.ok(checked <= allowance, `${checked} guesses checked, at most ${allowance} allowed`);
    assert.ok(codes.includes("rate_limited"), "the address was never limited");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const limitedCount = Number(
      /p2pchat_rate_limited_total\{kind="login"\} (\d+)/.exec(metrics)?.[1],
    );
    assert.equal(limitedCount, 1 + codes.filter((code) => code === "rate_limited").length);
  });
});

Deno.test("abuse: sixty parallel wrong passwords get at most five checked, and the right one no session", async () => {
  const server = await startServer();
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    const setup = await TestClient.connect(server.url);
    clients.push(setup);
    await setup.login("alice", "alice-secret-1");
    // Each guess on its own connection, all at once, as a scripted attacker would.
    const guessers = await Promise.all(
      Array.from({ length: 61 }, () => TestClient.connect(server.url)),
    );
    clients.push(...guessers);
    const answers = await Promise.all(guessers.map((c, i) =>
      c.request({
        type: "login",
        username: "alice",
        secret: i === 60 ? "alice-secret-1" : `wrong-pass-${i}`,
      }, 60_000)
    ));
    const codes = answers.map((a) => a.type === "error" ? a.code : a.type);
    const checked = codes.filter((c) => c === "wrong_credentials").length;
    assert.ok(checked <= 5, `${checked} wrong passwords were checked: ${codes.join(",")}`);
    assert.ok(codes.filter((c) => c === "rate_limited").length >= 55);
  });
});

Deno.test("abuse: connections per address are capped; a closed one frees its place", async () => {
  const server = await startServer({ env: { P2P_MAX_CONNECTIONS_PER_ADDRESS: "3" } });
  const clients: TestClient[] = [];
  await withServers([server], clients, async () => {
    for (let i = 0; i < 3; i++) clients.push(await TestClient.connect(server.url));
    const fourth = await fetch(`${server.url}/ws`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    assert.equal(fourth.status, 503);
    assert.match(await fourth.text(), /Too many connections from your address/);
    await clients.pop()!.close();
    // The server sees the close a moment later: wait until a new connection is let in.
    const again = await waitFor("a place to free up", async () => {
      try {
        return await TestClient.connect(server.url);
      } catch {
        return undefined;
      }
    });
    clients.push(again);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /p2pchat_ws_refused_total\{reason="address_full"\} [1-9]/);
  });
});

Deno.test("abuse: a frame flood is rate limited, then the socket is closed", async () => {
  const server = await startServer();
  await withServers([server], [], async () => {
    const socket = new WebSocket(server.url.replace(/^http/, "ws") + "/ws");
    const frames: ServerFrame[] = [];
    socket.onmessage = (e) => frames.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    const closed = new Promise<CloseEvent>((r) => socket.onclose = r);
    const floodStart = Date.now();
    // 400 frames at once, in batches so the client stops sending once the server closes.
    for (let i = 0; i < 400 && socket.readyState === WebSocket.OPEN; i++) {
      socket.send(JSON.stringify({ v: 1, type: "ping", reqId: i }));
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 1));
    }
    const event = await closed;
    // The limits refill with time (50 frames and one error per second): on a slow machine the
    // flood lasts longer and may earn a few more answers, never fewer.
    const floodSeconds = (Date.now() - floodStart) / 1000;
    // The server closes with 4008; a client still writing may see the connection reset instead.
    assert.ok([4008, 1006, 0].includes(event.code), `close code ${event.code}`);
    await waitFor(
      "the abuse log line",
      () => server.logs().includes("connection_closed_for_abuse"),
    );
    const pongs = frames.filter((f) => f.type === "pong").length;
    const mostPongs = Math.min(300, 100 + Math.ceil(50 * floodSeconds));
    assert.ok(pongs >= 100 && pongs <= mostPongs, `${pongs} pongs in ${floodSeconds} s`);
    const limited = frames.filter((f) => f.type === "error" && f.code === "rate_limited");
    assert.ok(
      limited.length >= 1 && limited.length <= 1 + Math.floor(floodSeconds),
      `${limited.length} rate_limited errors in ${floodSeconds} s: one per second, not one per frame`,
    );
  });
});

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A private CA and a certificate for 127.0.0.1/localhost signed by it, in a temp dir. */
async function makeCertificate(): Promise<{ dir: string; ca: string }> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-tls-" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-days",
    "2",
    "-subj",
    "/CN=P2P-Chat test CA",
    "-keyout",
    "ca-key.pem",
    "-out",
    "ca.pem",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ], dir); // deno-fmt-ignore
  await openssl(["req", ...ec, "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "req.csr"], dir);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" +
      "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "req.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca-key.pem",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
    "-out",
    "cert.pem",
  ], dir); // deno-fmt-ignore
  return { dir, ca: await Deno.readTextFile(`${dir}/ca.pem`) };
}

Deno.test("https: servers serve HTTPS/WSS with --tls-cert/--tls-key and call each other over HTTPS", async () => {
  const { dir, ca } = await makeCertificate();
  const env = {
    P2P_TLS_CERT: `${dir}/cert.pem`,
    P2P_TLS_KEY: `${dir}/key.pem`,
    // Servers trust the private CA for their calls to each other (Deno's own setting).
    DENO_CERT: `${dir}/ca.pem`,
  };
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const first = await startServer({ env });
  const servers = [first, await startServer({ env, peers: [first.url] })];
  try {
    await waitFor("both servers to see each other over HTTPS", async () => {
      for (const s of servers) {
        const health = await (await fetch(`${s.url}/healthz`, { client })).json();
        if (health.servers.length !== 2) return false;
      }
      return true;
    });
    for (const s of servers) assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    // The hellos that made them see each other went over HTTPS.
    const health = await (await fetch(`${servers[1]!.url}/healthz`, { client })).json();
    assert.deepEqual(health.servers, servers.map((s) => s.url).sort());
    // Without trusting the CA the certificate is refused.
    await assert.rejects(() => fetch(`${servers[0]!.url}/healthz`));

    const socket = new DenoWebSocket(servers[0]!.url.replace(/^https/, "wss") + "/ws", { client });
    const replies: ServerFrame[] = [];
    const got = (n: number) => waitFor(`reply ${n}`, () => replies.length >= n);
    socket.onmessage = (e) => replies.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    socket.send(JSON.stringify({
      v: 1,
      type: "register",
      reqId: 1,
      username: "alice",
      secret: "alice-secret-1",
      ...TEST_ACCOUNT,
    }));
    await got(1);
    socket.send(JSON.stringify({
      v: 1,
      type: "login",
      reqId: 2,
      username: "alice",
      secret: "alice-secret-1",
    }));
    await got(2);
    assert.equal(replies[1]!.type, "session");
    assert.ok(replies[1]!.type === "session" && replies[1]!.servers.length === 2);
    // The message cap holds over TLS too: a frame past it closes the socket with 1009.
    let closeCode: number | undefined;
    socket.onclose = (e) => closeCode = e.code;
    socket.send("x".repeat(300_000));
    await waitFor("the server to close the socket", () => closeCode !== undefined);
    assert.equal(closeCode, 1009);
  } finally {
    client.close();
    await Promise.all(servers.map((s) => s.stop()));
    await Deno.remove(dir, { recursive: true });
  }
});
