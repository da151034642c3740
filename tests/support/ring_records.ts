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
