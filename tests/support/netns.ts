/**
 * Private network namespaces for tests that make real WebRTC connections. Inside a namespace,
 * Chromium gathers host candidates on a private address and no ICE or mDNS packet can reach the
 * machine's real network. Needs root; {@link canUseNetns} tells whether this process can.
 */

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, out: text };
}

async function must(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  if (!r.ok) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.out.trim()}`);
}

/** Whether this process may create network namespaces (root with `ip` available). */
export async function canUseNetns(): Promise<{ ok: boolean; why: string }> {
  if (Deno.uid() !== 0) return { ok: false, why: "not running as root" };
  try {
    const r = await run("ip", ["netns", "list"]);
    return r.ok ? { ok: true, why: "" } : { ok: false, why: `ip netns failed: ${r.out.trim()}` };
  } catch {
    return { ok: false, why: "the ip command (iproute2) is not installed" };
  }
}

/** A namespace made by a test; {@link remove} deletes it and everything inside. */
export interface TestNamespace {
  name: string;
  /** The private address of the namespace's only non-loopback interface. */
  address: string;
  remove(): Promise<void>;
}

/**
 * Creates a namespace with loopback up and a veth interface holding `address`/24 as the default
 * route (Chromium gathers no candidates without one). The veth's other end is in the same
 * namespace, so no packet sent inside can leave it.
 */
export async function createIsolatedNamespace(
  name = `p2pchat-${Deno.pid}`,
  address = "10.77.0.1",
): Promise<TestNamespace> {
  await run("ip", ["netns", "del", name]); // a leftover of a crashed run
  await must("ip", ["netns", "add", name]);
  const inNs = (args: string[]) => must("ip", ["netns", "exec", name, "ip", ...args]);
  try {
    await inNs(["link", "set", "lo", "up"]);
    // Both ends of the veth pair live inside the namespace: there is no way out of it.
    await inNs(["link", "add", "p2p0", "type", "veth", "peer", "name", "p2p1"]);
    await inNs(["addr", "add", `${address}/24`, "dev", "p2p0"]);
    await inNs(["link", "set", "p2p1", "up"]);
    await inNs(["link", "set", "p2p0", "up"]);
    await inNs(["route", "add", "default", "dev", "p2p0"]);
  } catch (err) {
    await run("ip", ["netns", "del", name]);
    throw err;
  }
  return { name, address, remove: () => must("ip", ["netns", "del", name]) };
}

/** Set in the environment of a process re-executed inside a test namespace. */
export const IN_NETNS_ENV = "P2P_IN_NETNS";

/**
 * Runs this same script inside a fresh isolated namespace when this process is root and not
 * already inside one; returns the child's exit code, or undefined when the caller should just
 * carry on here (no root, or already inside).
 */
export async function reexecInNamespace(
  scriptUrl: string,
  args: string[],
): Promise<number | undefined> {
  if (Deno.env.get(IN_NETNS_ENV) === "1") return undefined;
  const netns = await canUseNetns();
  if (!netns.ok) {
    if (Deno.env.get("CI") === "true") {
      throw new Error(`Needs a private network namespace and cannot make one: ${netns.why}`);
    }
    console.error(`No network namespace (${netns.why}): running on this machine's network.`);
    return undefined;
  }
  const ns = await createIsolatedNamespace();
  try {
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, Deno.execPath(), "run", "--allow-all", scriptUrl, ...args],
      env: { [IN_NETNS_ENV]: "1" },
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    return (await child.status).code;
  } finally {
    await ns.remove();
  }
}
