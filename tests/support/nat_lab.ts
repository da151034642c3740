/**
 * Two users behind two home routers, in network namespaces: a "public" namespace with a bridge
 * (203.0.113.0/24) where two ring servers and coturn listen on 203.0.113.1, and for each side a
 * router namespace (WAN 203.0.113.10 / .20 on the bridge, LAN 192.168.X.1) that masquerades
 * with nftables, and a client namespace (192.168.X.2) whose browser reaches the world only
 * through its router. The browsers are started inside the client namespaces and driven from this
 * process through a loopback port forward (`port_forward.ts`); each page opens the app on
 * `http://127.0.0.1:800X` (a secure context) which a proxy inside the client namespace carries
 * to its server through the NAT. Nothing is created in the root namespace except loopback
 * listeners. Needs root, nftables and coturn (`/usr/bin/turnserver`).
 */
import type { Browser } from "puppeteer-core";
import { launchBrowser, launchFirefox, type TestBrowser } from "./browser.ts";
import { openApp, signIn, waitForContact } from "./chat_page.ts";
import { NETNS_PREFIX, removeLeftovers } from "./netns_cluster.ts";
import { forwardIntoNamespace, type PortForward } from "./port_forward.ts";
import { type ServerProcess, startServer } from "./server_process.ts";
import { waitFor } from "./wait.ts";

/** How a router maps its LAN's flows: keeping ports (ordinary NAT) or a new port per flow. */
export type NatMode = "port-preserving" | "fully-random";
/** One side of the lab. */
export type Side = "a" | "b";

/** The public address of the servers and the TURN server. */
export const PUBLIC_IP = "203.0.113.1";
/** coturn's port (STUN and TURN, UDP and TCP). */
export const TURN_PORT = 3478;
/** The secret the servers and coturn share (TURN REST credentials). */
const TURN_SECRET = "nat-lab-turn-secret-0123456789";
const SERVER_PORTS = { a: 8001, b: 8002 } as const;
const WAN_IP = { a: "203.0.113.10", b: "203.0.113.20" } as const;
const LAN = { a: "192.168.1", b: "192.168.2" } as const;
const TURNSERVER = Deno.env.get("TURNSERVER_PATH") ?? "/usr/bin/turnserver";
const decoder = new TextDecoder();

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = decoder.decode(out.stdout) + decoder.decode(out.stderr);
  if (!out.success) throw new Error(`Command failed: ${[cmd, ...args].join(" ")}: ${text.trim()}`);
  return text;
}

/** A browser started inside one side's client namespace. */
export interface LabBrowser {
  browser: TestBrowser["browser"];
  /** The app's address as pages in this browser open it. */
  appUrl: string;
}

/** The lab; {@link destroy} (or `await using`) ends every process and namespace it made. */
export class NatLab implements AsyncDisposable {
  readonly servers: ServerProcess[] = [];
  #base = `${NETNS_PREFIX}${Deno.pid}`;
  #namespaces: string[] = [];
  #dir = "";
  #turn: Deno.ChildProcess | undefined;
  #proxies: Deno.ChildProcess[] = [];
  #forwards: PortForward[] = [];
  #browsers: TestBrowser[] = [];

  private constructor() {}

  /** The namespace names. */
  get pub(): string {
    return `${this.#base}-pub`;
  }
  router(side: Side): string {
    return `${this.#base}-nat${side}`;
  }
  client(side: Side): string {
    return `${this.#base}-cli${side}`;
  }

  /** Builds the namespaces, starts coturn and two ring servers; NAT starts port-preserving. */
  static async create(): Promise<NatLab> {
    await removeLeftovers();
    const lab = new NatLab();
    try {
      lab.#dir = await Deno.makeTempDir({ prefix: "p2pchat-natlab-" });
      await lab.#build();
      await lab.setNat("port-preserving");
      await lab.startTurn();
      await lab.#startServers();
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  async #ns(name: string): Promise<void> {
    await run("ip", ["netns", "add", name]);
    this.#namespaces.push(name);
    await run("ip", ["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
  }

  #ip(ns: string, args: string[]): Promise<string> {
    return run("ip", ["netns", "exec", ns, "ip", ...args]);
  }

  /**
   * A default route into nowhere: packets to addresses nobody here has (a peer's
   * private host candidate, tried by ICE through TURN) vanish as on the Internet, instead of
   * failing at once with "network unreachable" (which makes coturn close the allocation).
   */
  async #sinkDefaultRoute(ns: string): Promise<void> {
    // A veth whose other end stays here: frames to a gateway MAC nobody owns are dropped there.
    await this.#ip(ns, ["link", "add", "sink", "type", "veth", "peer", "name", "sinkend"]);
    await this.#ip(ns, ["link", "set", "sinkend", "up"]);
    await this.#ip(ns, ["link", "set", "sink", "up"]);
    await this.#ip(ns, [
      "neigh",
      "add",
      "10.255.255.1",
      "lladdr",
      "02:00:00:00:00:01",
      "dev",
      "sink",
      "nud",
      "permanent",
    ]);
    await this.#ip(ns, ["route", "add", "default", "via", "10.255.255.1", "dev", "sink", "onlink"]);
  }

  async #build(): Promise<void> {
    await this.#ns(this.pub);
    await this.#ip(this.pub, ["link", "add", "br0", "type", "bridge"]);
    await this.#ip(this.pub, ["addr", "add", `${PUBLIC_IP}/24`, "dev", "br0"]);
    await this.#ip(this.pub, ["link", "set", "br0", "up"]);
    await this.#sinkDefaultRoute(this.pub);
    for (const side of ["a", "b"] as const) {
      const router = this.router(side);
      const client = this.client(side);
      await this.#ns(router);
      await this.#ns(client);
      // WAN: the router's "wan" to a port on the public bridge.
      await this.#ip(router, ["link", "add", "wan", "type", "veth", "peer", "name", `wan${side}`]);
      await this.#ip(router, ["link", "set", `wan${side}`, "netns", this.pub]);
      await this.#ip(this.pub, ["link", "set", `wan${side}`, "master", "br0", "up"]);
      await this.#ip(router, ["addr", "add", `${WAN_IP[side]}/24`, "dev", "wan"]);
      await this.#ip(router, ["link", "set", "wan", "up"]);
      // LAN: the router's "lan" to the client's "eth0".
      await this.#ip(router, ["link", "add", "lan", "type", "veth", "peer", "name", "eth0"]);
      await this.#ip(router, ["link", "set", "eth0", "netns", client]);
      await this.#ip(router, ["addr", "add", `${LAN[side]}.1/24`, "dev", "lan"]);
      await this.#ip(router, ["link", "set", "lan", "up"]);
      await this.#ip(client, ["addr", "add", `${LAN[side]}.2/24`, "dev", "eth0"]);
      await this.#ip(client, ["link", "set", "eth0", "up"]);
      await this.#ip(client, ["route", "add", "default", "via", `${LAN[side]}.1`]);
      await run("ip", ["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
      await this.#sinkDefaultRoute(router);
    }
  }

  /**
   * Sets both routers' NAT: `port-preserving` is Linux's ordinary masquerade (a flow keeps its
   * source port when it can: STUN's server-reflexive address works for other peers too);
   * `fully-random` gives every flow a random port, so no reflexive address is reachable by a
   * peer and only TURN gets through. Existing flows keep their mappings. Like a home router's
   * firewall, both drop what arrives unasked on the WAN; dropped before conntrack confirms it,
   * such a packet leaves no entry that would make the router remap the LAN's own flow to that
   * peer (which would break hole punching for a reason no real router has).
   */
  async setNat(mode: NatMode): Promise<void> {
    const flags = mode === "fully-random" ? " fully-random" : "";
    for (const side of ["a", "b"] as const) {
      await run(
        "ip",
        ["netns", "exec", this.router(side), "nft", "-f", "-"],
        `flush ruleset
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade${flags}
  }
}
table ip filter {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state new drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state new drop
  }
}
`,
      );
    }
  }

  /**
   * Drops every UDP packet `side`'s router would forward from its LAN: no data channel path is
   * left (WebSocket, over TCP, still works). {@link setNat} lifts it.
   */
  async cutUdp(side: Side): Promise<void> {
    await run("ip", [
      "netns",
      "exec",
      this.router(side),
      "nft",
      'insert rule ip filter forward iifname "lan" meta l4proto udp drop',
    ]);
  }

  /** Starts coturn on the public address (STUN and TURN with the servers' shared secret). */
  async startTurn(): Promise<void> {
    if (this.#turn) return;
    const conf = `${this.#dir}/turnserver.conf`;
    await Deno.writeTextFile(
      conf,
      [
        `listening-ip=${PUBLIC_IP}`,
        `relay-ip=${PUBLIC_IP}`,
        `listening-port=${TURN_PORT}`,
        "min-port=49160",
        "max-port=49300",
        "use-auth-secret",
        `static-auth-secret=${TURN_SECRET}`,
        "realm=p2pchat.test",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        `userdb=${this.#dir}/turndb`,
        `pidfile=${this.#dir}/turnserver.pid`,
        "log-file=stdout",
        "simple-log",
        // Verbose: it then logs its listeners, which is how this harness knows it is up.
        "verbose",
        "",
      ].join("\n"),
    );
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", this.pub, TURNSERVER, "-c", conf],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#turn = child;
    let log = "";
    void (async () => {
      for await (const chunk of child.stdout) log += decoder.decode(chunk);
    })();
    void child.stderr.pipeTo(new WritableStream());
    await waitFor(
      "coturn to listen",
      () => /UDP listener opened on/i.test(log),
      20_000,
    ).catch((err) => {
      throw new Error(`${err.message}\ncoturn said:\n${log}`);
    });
  }

  /** Stops coturn (by its PID): no STUN, no TURN. */
  async stopTurn(): Promise<void> {
    const child = this.#turn;
    if (!child) return;
    this.#turn = undefined;
    try {
      child.kill("SIGKILL");
    } catch { /* already ended */ }
    await child.status;
  }

  async #startServers(): Promise<void> {
    const env = {
      P2P_STUN_URLS: `stun:${PUBLIC_IP}:${TURN_PORT}`,
      P2P_TURN_URLS: `turn:${PUBLIC_IP}:${TURN_PORT}?transport=udp`,
      P2P_TURN_SECRET: TURN_SECRET,
      P2P_ALLOWED_ORIGINS: Object.values(SERVER_PORTS).map((p) => `http://127.0.0.1:${p}`).join(
        ",",
      ),
    };
    const first = await startServer({
      netns: this.pub,
      hostname: PUBLIC_IP,
      port: SERVER_PORTS.a,
      env,
      dataDir: await Deno.makeTempDir({ dir: this.#dir }),
    });
    this.servers.push(first);
    this.servers.push(
      await startServer({
        netns: this.pub,
        hostname: PUBLIC_IP,
        port: SERVER_PORTS.b,
        peers: [first.url],
        env,
        dataDir: await Deno.makeTempDir({ dir: this.#dir }),
      }),
    );
    // Both sides' proxies to their server, so pages have a secure origin on loopback.
    for (const side of ["a", "b"] as const) {
      const port = SERVER_PORTS[side];
      const proxy = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          this.client(side),
          Deno.execPath(),
          "run",
          "--allow-net",
          new URL("./port_forward.ts", import.meta.url).pathname,
          "--listen",
          `127.0.0.1:${port}`,
          "--to",
          `${PUBLIC_IP}:${port}`,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      this.#proxies.push(proxy);
      const reader = proxy.stdout.getReader();
      const { value } = await reader.read();
      reader.releaseLock();
      void proxy.stdout.pipeTo(new WritableStream()).catch(() => {});
      if (!value || !decoder.decode(value).includes("listening")) {
        throw new Error(`The proxy in ${this.client(side)} did not start`);
      }
    }
  }

  /** Starts a browser inside `side`'s client namespace. */
  async openBrowser(side: Side, kind: "chromium" | "firefox"): Promise<LabBrowser> {
    const forward = forwardIntoNamespace(this.client(side));
    this.#forwards.push(forward);
    const wrapper = `${this.#dir}/${kind}-${side}.sh`;
    const program = kind === "firefox"
      ? Deno.env.get("FIREFOX_PATH") ?? "/usr/bin/firefox-esr"
      : Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/sh\nexec ip netns exec ${this.client(side)} ${program} "$@"\n`,
    );
    await Deno.chmod(wrapper, 0o755);
    const launch = { executablePath: wrapper, debuggingPort: forward.port };
    const browser = kind === "firefox" ? await launchFirefox(launch) : await launchBrowser(launch);
    this.#browsers.push(browser);
    return { browser: browser.browser, appUrl: `http://127.0.0.1:${SERVER_PORTS[side]}` };
  }

  /** Ends browsers, servers, coturn, proxies and namespaces; never throws. */
  async destroy(): Promise<void> {
    await Promise.allSettled(this.#browsers.map((b) => b.close()));
    await Promise.allSettled(this.#forwards.map((f) => f.close()));
    await Promise.allSettled(this.servers.map((s) => s.stop()));
    await this.stopTurn().catch(() => {});
    for (const p of this.#proxies) {
      try {
        p.kill("SIGKILL");
      } catch { /* already ended */ }
      await p.status.catch(() => {});
    }
    for (const ns of this.#namespaces.reverse()) {
      await run("ip", ["netns", "del", ns]).catch(() => {});
    }
    if (this.#dir) await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  /** Same as {@link destroy}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }
}

/** Registers `left` in the first browser and `right` in the second; each sees the other online. */
export async function registerPair(
  one: LabBrowser,
  two: LabBrowser,
  left: string,
  right: string,
): Promise<[Awaited<ReturnType<typeof openApp>>, Awaited<ReturnType<typeof openApp>>]> {
  const a = await openApp(one.browser as Browser, one.appUrl);
  const b = await openApp(two.browser as Browser, two.appUrl);
  await signIn(a, left, `${left}-password`, true);
  await signIn(b, right, `${right}-password`, true);
  await waitForContact(a, right, true);
  await waitForContact(b, left, true);
  return [a, b];
}
