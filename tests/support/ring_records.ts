/**
 * What the servers hold on disk, read from their SQLite files (read-only) by a test running as
 * the same user: mailbox copies with their order keys, and mailbox rows of given ids.
 */
import { DatabaseSync } from "node:sqlite";
import type { ServerProcess } from "./server_process.ts";

/** Every pending mailbox entry on `servers`: `recipient/id` → the `seq` of each copy. */
export function mailboxCopies(servers: ServerProcess[]): Map<string, number[]> {
  const copies = new Map<string, number[]>();
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT recipient, message_id, seq FROM mailbox").all() as {
        recipient: string;
        message_id: string;
        seq: number;
      }[];
      for (const r of rows) {
        const key = `${r.recipient}/${r.message_id}`;
        copies.set(key, [...(copies.get(key) ?? []), r.seq]);
      }
    } finally {
      db.close();
    }
  }
  return copies;
}

/**
 * Overwrites `server`'s copy of `username`'s account with another registration, as if that
 * server had received it from the other side of a partition.
 */
export function plantRegistration(
  server: ServerProcess,
  username: string,
  registration: { hash: string; createdAt: number },
): void {
  const db = new DatabaseSync(`${server.dataDir}/node.sqlite`);
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    const changed = db.prepare("UPDATE accounts SET hash = ?, created_at = ? WHERE username = ?")
      .run(registration.hash, registration.createdAt, username).changes;
    if (Number(changed) !== 1) throw new Error(`${server.url} holds no copy of "${username}"`);
  } finally {
    db.close();
  }
}

/** The `createdAt` of `username`'s account as the first of `servers` holding a copy has it. */
export function registeredAt(servers: ServerProcess[], username: string): number | undefined {
  for (const s of servers) {
    const db = new DatabaseSync(`${s.dataDir}/node.sqlite`, { readOnly: true });
    try {
      const row = db.prepare("SELECT created_at FROM accounts WHERE username = ?").get(username) as
        | { created_at: number }
        | undefined;
      if (row) return row.created_at;
    } finally {
      db.close();
    }
  }
  return undefined;
}

/** Usernames of the accounts `server` holds a copy of. */
export function accountCopiesOn(server: ServerProcess): string[] {
  const db = new DatabaseSync(`${server.dataDir}/node.sqlite`, { readOnly: true });
  try {
    return (db.prepare("SELECT username FROM accounts").all() as { username: string }[])
      .map((r) => r.username);
  } finally {
    db.close();
  }
}
