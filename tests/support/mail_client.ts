/**
 * A command-line chat client for tests that must act from inside a network namespace (where the
 * test process itself cannot open sockets): it speaks the browser protocol over a WebSocket,
 * performs one command, and prints one JSON line. Usage:
 *   deno run --allow-net mail_client.ts <server-url> '<command JSON>'
 * Commands: {"op":"register","users":[…],"password":"…"}
 *           {"op":"send","user":"…","password":"…","to":"…","ids":[…]}
 *           {"op":"fetch","user":"…","password":"…"}  (fetches, acknowledges, prints the ids)
 * and, printing `{"ok":true,"result":"ok"|<error code>,"message","ms"}` whatever the server
 * answers (`ms`: how long the answer took, from inside the namespace):
 *           {"op":"try_register","user":"…","password":"…"}
 *           {"op":"try_login","user":"…","password":"…"}
 *           {"op":"try_send","user":"…","password":"…","to":"…","ids":[…]}
 * and {"op":"hold","user":"…","password":"…","forMs":…}: logs in, keeps the session until the
 * server says `superseded` (or `forMs` passes), then tries to resume with the same token; prints
 * `{"ok":true,"result":"superseded"|"timeout","message","closed","resumed":"ok"|<code>}`.
 */
import { TEST_ACCOUNT, TestClient } from "./ws_client.ts";

type Command =
  | { op: "register"; users: string[]; password: string }
  | { op: "send"; user: string; password: string; to: string; ids: string[] }
  | { op: "fetch"; user: string; password: string }
  | { op: "try_register"; user: string; password: string }
  | { op: "try_login"; user: string; password: string }
  | { op: "try_send"; user: string; password: string; to: string; ids: string[] }
  | { op: "hold"; user: string; password: string; forMs: number };

/** The outcome of a `try_*` command: "ok" or the server's error code. */
export interface Attempt {
  ok: true;
  result: string;
  message?: string;
  ms: number;
}

async function attempt(
  client: TestClient,
  frame: Record<string, unknown>,
  success: string,
): Promise<Attempt> {
  const started = performance.now();
  const r = await client.request(frame, 60_000);
  const ms = Math.round(performance.now() - started);
  if (r.type === success) return { ok: true, result: "ok", ms };
  if (r.type === "error") return { ok: true, result: r.code, message: r.message, ms };
  return { ok: true, result: `unexpected ${r.type}`, ms };
}

/** Runs one command against `url`; returns what it prints. */
export async function runMailCommand(url: string, command: Command): Promise<unknown> {
  const client = await TestClient.connect(url);
  try {
    switch (command.op) {
      case "register":
        for (const u of command.users) {
          const r = await client.request({
            type: "register",
            username: u,
            secret: command.password,
            ...TEST_ACCOUNT,
          });
          if (r.type !== "ok") throw new Error(`register ${u}: ${JSON.stringify(r)}`);
        }
        return { ok: true };
      case "send": {
        await client.login(command.user, command.password, false);
        const messages = command.ids.map((id) => ({
          id,
          sentAt: Date.now(),
          envelope: `sealed:${id}`,
        }));
        const r = await client.request({ type: "mail_send", to: command.to, messages }, 30_000);
        if (r.type !== "ok") throw new Error(`send: ${JSON.stringify(r)}`);
        return { ok: true };
      }
      case "fetch": {
        await client.login(command.user, command.password, false);
        const r = await client.request({ type: "mail_fetch" }, 30_000);
        if (r.type !== "mail") throw new Error(`fetch: ${JSON.stringify(r)}`);
        const ack = await client.request({
          type: "mail_ack",
          messages: r.messages.map((m) => ({ id: m.id, from: m.from })),
        }, 30_000);
        if (ack.type !== "ok") throw new Error(`ack: ${JSON.stringify(ack)}`);
        return { ok: true, ids: r.messages.map((m) => m.id) };
      }
      case "try_register":
        return await attempt(
          client,
          { type: "register", username: command.user, secret: command.password, ...TEST_ACCOUNT },
          "ok",
        );
      case "try_login":
        return await attempt(
          client,
          { type: "login", username: command.user, secret: command.password },
          "session",
        );
      case "hold": {
        const session = await client.login(command.user, command.password, false);
        const heartbeats = setInterval(() => client.send({ type: "heartbeat" }), 5000);
        try {
          const told = await client.next((f) => f.type === "superseded", command.forMs)
            .catch(() => undefined);
          await client.waitClosed("the server to close the session", 10_000).catch(() => {});
          const again = await TestClient.connect(url);
          try {
            const r = await again.request({ type: "resume", token: session.token });
            return {
              ok: true,
              result: told ? "superseded" : "timeout",
              message: told?.type === "superseded" ? told.message : undefined,
              closed: client.isClosed,
              resumed: r.type === "session" ? "ok" : r.type === "error" ? r.code : r.type,
            };
          } finally {
            await again.close();
          }
        } finally {
          clearInterval(heartbeats);
        }
      }
      case "try_send": {
        const login = await attempt(
          client,
          { type: "login", username: command.user, secret: command.password },
          "session",
        );
        if (login.result !== "ok") return { ...login, result: `login ${login.result}` };
        const messages = command.ids.map((id) => ({
          id,
          sentAt: Date.now(),
          envelope: `sealed:${id}`,
        }));
        return await attempt(client, { type: "mail_send", to: command.to, messages }, "ok");
      }
    }
  } finally {
    await client.close();
  }
}

if (import.meta.main) {
  const [url, json] = Deno.args;
  if (!url || !json) {
    console.error("Usage: mail_client.ts <server-url> '<command JSON>'");
    Deno.exit(2);
  }
  try {
    console.log(JSON.stringify(await runMailCommand(url, JSON.parse(json))));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: (err as Error).message }));
    Deno.exit(1);
  }
}
