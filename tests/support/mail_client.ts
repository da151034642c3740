/**
 * A command-line chat client for tests that must act from inside a network namespace (where the
 * test process itself cannot open sockets): it speaks the browser protocol over a WebSocket,
 * performs one command, and prints one JSON line. Usage:
 *   deno run --allow-net mail_client.ts <server-url> '<command JSON>'
 * Commands: {"op":"register","users":[…],"password":"…"}
 *           {"op":"send","user":"…","password":"…","to":"…","ids":[…]}
 *           {"op":"fetch","user":"…","password":"…"}  (fetches, acknowledges, prints the ids)
 */
import { TestClient } from "./ws_client.ts";

type Command =
  | { op: "register"; users: string[]; password: string }
  | { op: "send"; user: string; password: string; to: string; ids: string[] }
  | { op: "fetch"; user: string; password: string };

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
