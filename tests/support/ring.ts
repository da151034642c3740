/**
 * Judging a cluster of real server processes from outside: ring correctness (the core's
 * invariant checker over every node's `/ring` snapshot) and mailbox copies counted directly in
 * every node's SQLite file.
 */
import { DatabaseSync } from "node:sqlite";
import {
  checkRing,
  type ChordNodeState,
  IdSpace,
  type RingViolation,
} from "../../server/chord/mod.ts";
import type { RingView } from "../../server/cluster/mod.ts";
import type { ServerProcess } from "./server_process.ts";
import { waitFor } from "./wait.ts";

const SPACE = new IdSpace(160);
/** The successor list length servers run with. */
export const SUCCESSOR_LIST_LENGTH = 8;

/** A server's `/ring` snapshot. */
export async function ringView(server: ServerProcess): Promise<RingView> {
  return await (await fetch(`${server.url}/ring`)).json();
}

/** Turns a `/ring` snapshot into the state the invariant checker reads. */
export function toState(view: RingView): ChordNodeState {
  const ref = (n: { id: string; address: string }) => ({
    id: SPACE.fromHex(n.id, "id"),
    address: n.address,
  });
  return {
    self: ref(view.self),
    isMember: view.isMember,
    predecessor: view.predecessor ? ref(view.predecessor) : undefined,
    successorList: view.successors.map(ref),
    fingers: view.fingers.map((f) => (f ? ref(f) : undefined)),
  };
}

/** Violations of the full ring invariants among `servers` (all of them must be alive). */
export async function ringViolations(servers: ServerProcess[]): Promise<RingViolation[]> {
  const states = await Promise.all(servers.map(async (s) => toState(await ringView(s))));
  return checkRing(states, { strength: "full", successorListLength: SUCCESSOR_LIST_LENGTH });
}

/** Waits until the live servers form one correct ring; returns how long that took. */
export async function waitForCorrectRing(
  servers: ServerProcess[],
  what: string,
  timeoutMs = 40_000,
): Promise<number> {
  const start = Date.now();
  let last: RingViolation[] = [];
  try {
    await waitFor(
      what,
      async () => {
        last = await ringViolations(servers);
        return last.length === 0;
      },
      timeoutMs,
      100,
    );
  } catch (err) {
    const shown = JSON.stringify(last, (_, v) => typeof v === "bigint" ? v.toString(16) : v);
    throw new Error(`${(err as Error).message}\nlast violations: ${shown.slice(0, 2000)}`);
  }
  return Date.now() - start;
}

/** For every pending mailbox entry on `servers`, how many of their databases hold a copy. */
export function mailboxCopies(servers: ServerProcess[]): Map<string, number> {
  const copies = new Map<string, number>();
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT recipient, message_id FROM mailbox").all() as {
        recipient: string;
        message_id: string;
      }[];
      for (const r of rows) {
        const key = `${r.recipient}/${r.message_id}`;
        copies.set(key, (copies.get(key) ?? 0) + 1);
      }
    } finally {
      db.close();
    }
  }
  return copies;
}

/** For every account on `servers`, how many of their databases hold a copy. */
export function accountCopies(servers: ServerProcess[]): Map<string, number> {
  const copies = new Map<string, number>();
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT username FROM accounts").all() as { username: string }[];
      for (const r of rows) copies.set(r.username, (copies.get(r.username) ?? 0) + 1);
    } finally {
      db.close();
    }
  }
  return copies;
}

/** Which of `servers` hold a presence record of `username` that is online now. */
export function presenceHolders(servers: ServerProcess[], username: string): string[] {
  const holders: string[] = [];
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const row = db.prepare("SELECT expires_at FROM presence WHERE username = ?").get(username) as
        | { expires_at: number }
        | undefined;
      if (row && row.expires_at > Date.now()) holders.push(s.url);
    } finally {
      db.close();
    }
  }
  return holders;
}

/** Usernames of which at least one of `servers` holds an account copy. */
export function accountsHeldBy(servers: ServerProcess[]): Set<string> {
  return new Set(accountCopies(servers).keys());
}
