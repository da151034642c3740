/**
 * TCP across network namespaces for tests, with no link between them: a process can hold
 * sockets of one namespace only, but pipes cross namespaces. {@link forwardIntoNamespace}
 * listens on loopback in this process's namespace and, for each connection, starts this script
 * inside the target namespace (`--connect HOST:PORT`), which connects there and copies bytes
 * between that socket and its stdin/stdout. Run with `--listen A:P --to B:Q`, it is a plain TCP
 * proxy inside one namespace (a browser's page on `http://127.0.0.1:P`, a secure context, reaching
 * a server at a routed address).
 */

/** A running forward; {@link close} stops listening and ends every piped connection. */
export interface PortForward {
  /** The local port it listens on. */
  port: number;
  close(): Promise<void>;
}

const SELF = new URL(import.meta.url).pathname;

/**
 * Listens on `127.0.0.1:port` here (0: any free port) and connects each accepted connection to
 * `127.0.0.1:targetPort` inside namespace `netns` (the same port when not given).
 */
export function forwardIntoNamespace(
  netns: string,
  port = 0,
  targetPort?: number,
): PortForward {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const local = (listener.addr as Deno.NetAddr).port;
  const children = new Set<Deno.ChildProcess>();
  const accepting = (async () => {
    for await (const conn of listener) {
      const child = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          netns,
          Deno.execPath(),
          "run",
          "--allow-net",
          SELF,
          "--connect",
          `127.0.0.1:${targetPort ?? local}`,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      children.add(child);
      void Promise.allSettled([
        conn.readable.pipeTo(child.stdin),
        child.stdout.pipeTo(conn.writable),
      ]).then(async () => {
        try {
          child.kill("SIGKILL");
        } catch { /* already ended */ }
        await child.status;
        children.delete(child);
      });
    }
  })().catch(() => {});
  return {
    port: local,
    async close() {
      listener.close();
      await accepting;
      for (const child of children) {
        try {
          child.kill("SIGKILL");
        } catch { /* already ended */ }
      }
      await Promise.allSettled([...children].map((c) => c.status));
    },
  };
}

function hostPort(text: string): { hostname: string; port: number } {
  const at = text.lastIndexOf(":");
  return { hostname: text.slice(0, at), port: Number(text.slice(at + 1)) };
}

async function connectToStdio(target: string): Promise<void> {
  const conn = await Deno.connect(hostPort(target));
  await Promise.allSettled([
    Deno.stdin.readable.pipeTo(conn.writable),
    conn.readable.pipeTo(Deno.stdout.writable),
  ]);
}

async function proxy(listen: string, target: string): Promise<void> {
  const listener = Deno.listen(hostPort(listen));
  console.log("listening");
  for await (const conn of listener) {
    void (async () => {
      try {
        const out = await Deno.connect(hostPort(target));
        await Promise.allSettled([
          conn.readable.pipeTo(out.writable),
          out.readable.pipeTo(conn.writable),
        ]);
      } catch {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    })();
  }
}

if (import.meta.main) {
  const [mode, a, , b] = Deno.args;
  if (mode === "--connect" && a) await connectToStdio(a);
  else if (mode === "--listen" && a && b) await proxy(a, b);
  else {
    console.error("usage: port_forward.ts --connect HOST:PORT | --listen HOST:PORT --to HOST:PORT");
    Deno.exit(2);
  }
}
