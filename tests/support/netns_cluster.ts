/**
 * A private LAN of network namespaces for tests that need real multicast, real partitions and
 * (later) real WebRTC between servers: N node namespaces, each with loopback up and one veth
 * (`p2p0`, 10.78.0.X/24, the default route), whose other ends sit on a bridge inside a dedicated
 * "hub" namespace. Nothing is created in the root namespace, so no packet can reach the
 * machine's real network (eth0) and the root namespace never sees a multicast datagram.
 *
 * The test process stays in the root namespace. It reaches a server through a small probe
 * process started inside that server's namespace (`ip netns exec … deno run <this file>
 * --probe`), which performs HTTP requests given on stdin and answers on stdout: pipes cross
 * namespaces, sockets need not. Since the probe talks to its own namespace's address, it keeps
 * working while that node's link is cut.
 *
 * Every namespace is named `p2pnet-<pid>-…`; {@link NetnsCluster.create} first removes those
 * left behind by a test process that no longer runs, and {@link NetnsCluster.destroy} (also
 * `await using`) stops every server and probe and deletes every namespace.
 */
import type { RingView } from "../../server/cluster/mod.ts";
import { canUseNetns } from "./netns.ts";
import { type ServerProcess, type StartOptions, startServer } from "./server_process.ts";

/** What the mail client run by `NetnsCluster.chat` answers. */
export interface ChatAnswer {
  ids?: string[];
  result?: string;
  message?: string;
  ms?: number;
  closed?: boolean;
  resumed?: string;
}

/** Prefix of every namespace the harness creates. */
export const NETNS_PREFIX = "p2pnet-";

const decoder = new TextDecoder();

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { ok: out.success, out: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (!r.ok) throw new Error(`Command failed: ${[cmd, ...args].join(" ")}: ${r.out.trim()}`);
  return r.out;
}

/**
 * Whether namespace tests can run here. Under `CI=true` a missing capability throws (a CI run
 * must not pass by skipping); elsewhere the reason is printed and `ignore` is true.
 *
 * @example
 * ```ts
 * const netns = await netnsTestAvailability("discovery tests");
 * Deno.test({ name: "…", ignore: netns.ignore, fn: async () => {} });
 * ```
 */
export async function netnsTestAvailability(what: string): Promise<{ ignore: boolean }> {
  const netns = await canUseNetns();
  if (netns.ok) return { ignore: false };
  const message = `Cannot run ${what}: they need network namespaces: ${netns.why}`;
  if (Deno.env.get("CI") === "true") throw new Error(`${message} (CI=true: refusing to skip)`);
  console.warn(`Skipping ${what}: ${netns.why} (run as root to include them)`);
  return { ignore: true };
}

/** A pending request to a probe. */
interface ProbeCall {
  resolve(r: ProbeResponse): void;
  reject(err: Error): void;
}

/** What a probe answers. */
interface ProbeResponse {
  id: number;
  status?: number;
  body?: string;
  error?: string;
}

/** A long-lived process inside one namespace that runs HTTP requests for the test. */
class Probe {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #calls = new Map<number, ProbeCall>();
  #nextId = 1;
  #done: Promise<void>;

  constructor(netns: string) {
    this.#child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        netns,
        Deno.execPath(),
        "run",
        "--allow-net",
        new URL(import.meta.url).pathname,
        "--probe",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#done = this.#readAnswers();
  }

  async #readAnswers(): Promise<void> {
    let buffer = "";
    for await (const chunk of this.#child.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const answer = JSON.parse(buffer.slice(0, newline)) as ProbeResponse;
        buffer = buffer.slice(newline + 1);
        this.#calls.get(answer.id)?.resolve(answer);
        this.#calls.delete(answer.id);
      }
    }
    for (const call of this.#calls.values()) call.reject(new Error("Probe process ended"));
    this.#calls.clear();
  }

  /** GETs `url` from inside the namespace; resolves with the status and body text. */
  async get(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
    const id = this.#nextId++;
    const answer = new Promise<ProbeResponse>((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
    });
    await this.#writer.write(
      new TextEncoder().encode(JSON.stringify({ id, url, timeoutMs }) + "\n"),
    );
    const r = await answer;
    if (r.error !== undefined || r.status === undefined) {
      throw new Error(`GET ${url} failed: ${r.error}`);
    }
    return { status: r.status, body: r.body ?? "" };
  }

  /** Ends the probe (closing its stdin) and waits for it. */
  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* already ended */ }
    }, 3000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#done.catch(() => {});
  }
}

/** The probe side: reads `{id, url, timeoutMs}` lines, answers `{id, status, body}` lines. */
async function runProbe(): Promise<void> {
  const encoder = new TextEncoder();
  const answer = (r: ProbeResponse) => Deno.stdout.write(encoder.encode(JSON.stringify(r) + "\n"));
  let buffer = "";
  const pending = new Set<Promise<unknown>>();
  for await (const chunk of Deno.stdin.readable) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const { id, url, timeoutMs } = JSON.parse(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      const work = (async () => {
        try {
          const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
          await answer({ id, status: res.status, body: await res.text() });
        } catch (err) {
          await answer({ id, error: String(err) });
        }
      })();
      pending.add(work);
      work.finally(() => pending.delete(work));
    }
  }
  await Promise.allSettled([...pending]);
}

/** One namespace of a {@link NetnsCluster}. */
export interface NetnsNode {
  /** 1-based position; the address is `10.78.0.<index>`. */
  index: number;
  /** The namespace's name. */
  netns: string;
  /** The namespace's address on the private LAN. */
  address: string;
  /** The server started in it, if any. */
  server: ServerProcess | undefined;
}

/** Options of {@link NetnsCluster.create}. */
export interface NetnsClusterOptions {
  /** First three octets of the private /24. @default "10.78.0" */
  subnet?: string;
}

/** N namespaces on a private bridge, one real server in each. */
export class NetnsCluster implements AsyncDisposable {
  readonly nodes: NetnsNode[] = [];
  #base: string;
  #hub: string;
  #subnet: string;
  #probes = new Map<NetnsNode, Probe>();
  #dataDirs: string[] = [];
  #groupBridges: string[] = [];

  private constructor(subnet: string) {
    this.#base = `${NETNS_PREFIX}${Deno.pid}`;
    this.#hub = `${this.#base}-hub`;
    this.#subnet = subnet;
  }

  /** Creates the hub and `size` node namespaces; on any failure removes what it made. */
  static async create(size: number, options: NetnsClusterOptions = {}): Promise<NetnsCluster> {
    await removeLeftovers();
    const cluster = new NetnsCluster(options.subnet ?? "10.78.0");
    try {
      await must("ip", ["netns", "add", cluster.#hub]);
      await cluster.#inHub(["link", "set", "lo", "up"]);
      await cluster.#addBridge("br0");
      for (let i = 0; i < size; i++) await cluster.addNode();
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
    return cluster;
  }

  #inHub(args: string[]): Promise<string> {
    return must("ip", ["netns", "exec", this.#hub, "ip", ...args]);
  }

  async #addBridge(name: string): Promise<void> {
    // Without an IGMP querier, snooping would stop forwarding the group after a while: flood.
    await this.#inHub(["link", "add", name, "type", "bridge", "mcast_snooping", "0"]);
    await this.#inHub(["link", "set", name, "up"]);
  }

  /** Adds one more namespace on the bridge (no server yet). */
  async addNode(): Promise<NetnsNode> {
    const index = this.nodes.length + 1;
    if (index > 253) throw new Error("A NetnsCluster holds at most 253 nodes");
    const node: NetnsNode = {
      index,
      netns: `${this.#base}-n${index}`,
      address: `${this.#subnet}.${index}`,
      server: undefined,
    };
    await must("ip", ["netns", "add", node.netns]);
    this.nodes.push(node);
    const inNode = (args: string[]) => must("ip", ["netns", "exec", node.netns, "ip", ...args]);
    await inNode(["link", "set", "lo", "up"]);
    await inNode(["link", "add", "p2p0", "type", "veth", "peer", "name", `port${index}`]);
    await inNode(["link", "set", `port${index}`, "netns", this.#hub]);
    await this.#inHub(["link", "set", `port${index}`, "master", "br0", "up"]);
    await inNode(["addr", "add", `${node.address}/24`, "dev", "p2p0"]);
    await inNode(["link", "set", "p2p0", "up"]);
    // A default route, so Chromium in this namespace would gather candidates; it leads nowhere
    // but the hub's bridge.
    await inNode(["route", "add", "default", "dev", "p2p0"]);
    return node;
  }

  /**
   * Starts a server in `node`'s namespace, listening on the node's address (port 0 unless
   * given) so the other namespaces reach it. Environment variables configure the rest.
   */
  async startServer(node: NetnsNode, options: StartOptions = {}): Promise<ServerProcess> {
    if (node.server) throw new Error(`Node ${node.index} already runs a server`);
    const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "p2pchat-netns-" });
    if (!options.dataDir) this.#dataDirs.push(dataDir);
    node.server = await startServer({
      ...options,
      dataDir,
      netns: node.netns,
      hostname: node.address,
    });
    return node.server;
  }

  /** Stops `node`'s server (SIGTERM, SIGKILL after 5 s). */
  async stopServer(node: NetnsNode): Promise<void> {
    const server = node.server;
    if (!server) return;
    node.server = undefined;
    const timer = setTimeout(() => {
      try {
        Deno.kill(server.pid, "SIGKILL");
      } catch { /* already ended */ }
    }, 5000);
    await server.stop();
    clearTimeout(timer);
  }

  /** GETs `path` from `node`'s server, from inside its namespace. */
  async get(node: NetnsNode, path: string, timeoutMs = 5000): Promise<string> {
    if (!node.server) throw new Error(`Node ${node.index} runs no server`);
    let probe = this.#probes.get(node);
    if (!probe) this.#probes.set(node, probe = new Probe(node.netns));
    const { status, body } = await probe.get(`${node.server.url}${path}`, timeoutMs);
    if (status !== 200) throw new Error(`GET ${path} on node ${node.index}: status ${status}`);
    return body;
  }

  /**
   * Runs one chat-client command (see mail_client.ts) against `node`'s server from inside its
   * namespace; resolves with the client's JSON answer or throws its error.
   */
  async chat(
    node: NetnsNode,
    command: Record<string, unknown>,
  ): Promise<ChatAnswer> {
    if (!node.server) throw new Error(`Node ${node.index} runs no server`);
    const script = new URL("./mail_client.ts", import.meta.url).pathname;
    const out = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        node.netns,
        Deno.execPath(),
        "run",
        "--allow-net",
        "--allow-read",
        script,
        node.server.url,
        JSON.stringify(command),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    let answer: ChatAnswer & { ok?: boolean; error?: string };
    try {
      answer = JSON.parse(text);
    } catch {
      throw new Error(
        `Chat client on node ${node.index} failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    if (!answer.ok) throw new Error(`Chat client on node ${node.index}: ${answer.error}`);
    return answer;
  }

  /** The servers `node`'s server sees alive (its `/healthz` list), sorted. */
  async liveServers(node: NetnsNode): Promise<string[]> {
    return (JSON.parse(await this.get(node, "/healthz")) as { servers: string[] }).servers;
  }

  /** `node`'s server's ring state (its `/ring` JSON). */
  async ringView(node: NetnsNode): Promise<RingView> {
    return JSON.parse(await this.get(node, "/ring")) as RingView;
  }

  /** Takes `node`'s link down: it can reach nobody and nobody reaches it. */
  async cutLink(node: NetnsNode): Promise<void> {
    await must("ip", ["netns", "exec", node.netns, "ip", "link", "set", "p2p0", "down"]);
  }

  /** Brings `node`'s link back up (its address and default route are restored with it). */
  async restoreLink(node: NetnsNode): Promise<void> {
    const inNode = (args: string[]) => must("ip", ["netns", "exec", node.netns, "ip", ...args]);
    await inNode(["link", "set", "p2p0", "up"]);
    // Taking the link down dropped the default route; put it back.
    await inNode(["route", "replace", "default", "dev", "p2p0"]);
  }

  /**
   * Splits the LAN: every group after the first gets a bridge of its own and its nodes' hub
   * ports move onto it, so nodes within a group still reach one another and every link across
   * groups is cut. Nodes in no group stay with the first. {@link heal} undoes it.
   */
  async partition(groups: NetnsNode[][]): Promise<void> {
    await this.heal();
    for (const [g, group] of groups.entries()) {
      if (g === 0) continue;
      const bridge = `part${g}`;
      await this.#addBridge(bridge);
      this.#groupBridges.push(bridge);
      for (const node of group) {
        await this.#inHub(["link", "set", `port${node.index}`, "master", bridge]);
      }
    }
  }

  /** Puts every node back on one bridge. */
  async heal(): Promise<void> {
    for (const node of this.nodes) {
      await this.#inHub(["link", "set", `port${node.index}`, "master", "br0"]);
    }
    for (const bridge of this.#groupBridges.splice(0)) {
      await this.#inHub(["link", "del", bridge]);
    }
  }

  /** Stops every server and probe, deletes every namespace and data directory; never throws. */
  async destroy(): Promise<void> {
    await Promise.allSettled(this.nodes.map((n) => this.stopServer(n)));
    await Promise.allSettled([...this.#probes.values()].map((p) => p.close()));
    this.#probes.clear();
    for (const node of this.nodes) await run("ip", ["netns", "del", node.netns]);
    // Deleting the hub takes the bridges and the hub ends of the veths with it.
    await run("ip", ["netns", "del", this.#hub]);
    for (const dir of this.#dataDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  /** Same as {@link destroy}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }
}

/**
 * Deletes namespaces of earlier runs whose test process no longer runs, ending the processes
 * still inside them (servers and probes that run crashed left behind).
 */
export async function removeLeftovers(): Promise<void> {
  const list = await run("ip", ["netns", "list"]);
  const pattern = new RegExp(`^${NETNS_PREFIX}(\\d+)-\\S+`);
  for (const line of list.out.split("\n")) {
    const match = line.match(pattern);
    if (!match) continue;
    const owner = Number(match[1]);
    if (owner === Deno.pid || await isRunning(owner)) continue;
    const name = match[0];
    const pids = await run("ip", ["netns", "pids", name]);
    for (const pid of pids.out.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch { /* already ended */ }
    }
    await run("ip", ["netns", "del", name]);
  }
}

async function isRunning(pid: number): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

if (import.meta.main && Deno.args[0] === "--probe") await runProbe();
