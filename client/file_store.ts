/**
 * Where one user's files live on this device (issue 15), apart from the sql.js history: the
 * content of every file sent or received (verified), the chunks of files still arriving (so a
 * transfer resumes after a dropped channel or a reload), and each transfer's state.
 *
 * In the browser: IndexedDB database `p2pchat-files-<username>` with stores `blobs` (id → bytes),
 * `parts` ([id, index] → plain chunk bytes) and `state` (id → {@link StoredFileState}). Tests use
 * {@link createMemoryFileStore}.
 */
import { openDB } from "idb";

/** What this device knows of one transfer. */
export interface StoredFileState {
  id: string;
  /** The other user. */
  peer: string;
  /** Whether this user sends the file. */
  outgoing: boolean;
  status: FileStatus;
  /** The chunks of an outgoing file went to the recipient's mailbox. */
  mailed?: boolean;
  /** How many chunks (from the first) the recipient's mailbox took. */
  mailedUpTo?: number;
}

/**
 * `sending`/`receiving`: under way (or waiting for the other side); `complete`: the receiver
 * holds it verified; `damaged`: its SHA-256 did not match; `cancelled`; `refused`: bigger than
 * the receiver's limit; `failed`: the servers refused its chunks (the sender is told why);
 * `missing`: its message came from an import or a hand-over that could not carry the file (this
 * device never holds it unless it is sent again).
 */
export type FileStatus =
  | "sending"
  | "receiving"
  | "complete"
  | "damaged"
  | "cancelled"
  | "refused"
  | "failed"
  | "missing";

/** One user's file storage. */
export interface FileStore {
  putBlob(id: string, bytes: Uint8Array<ArrayBuffer>): Promise<void>;
  getBlob(id: string): Promise<Uint8Array<ArrayBuffer> | null>;
  putPart(id: string, index: number, bytes: Uint8Array<ArrayBuffer>): Promise<void>;
  /** The chunks kept of `id`, by index. */
  parts(id: string): Promise<Map<number, Uint8Array<ArrayBuffer>>>;
  deleteParts(id: string): Promise<void>;
  putState(state: StoredFileState): Promise<void>;
  getState(id: string): Promise<StoredFileState | null>;
  /** Every transfer still under way. */
  unfinished(): Promise<StoredFileState[]>;
  close(): void;
}

/** Name of a user's IndexedDB database of files. */
export function fileDbName(owner: string): string {
  return `p2pchat-files-${owner}`;
}

/** Opens `owner`'s file store in IndexedDB. */
export async function openIdbFileStore(owner: string): Promise<FileStore> {
  const db = await openDB(fileDbName(owner), 1, {
    upgrade(d) {
      d.createObjectStore("blobs");
      d.createObjectStore("parts");
      d.createObjectStore("state", { keyPath: "id" });
    },
  });
  const range = (id: string) => IDBKeyRange.bound([id, 0], [id, Number.MAX_SAFE_INTEGER]);
  return {
    async putBlob(id, bytes) {
      await db.put("blobs", bytes, id);
    },
    async getBlob(id) {
      const v = await db.get("blobs", id);
      return v instanceof Uint8Array ? new Uint8Array(v) : null;
    },
    async putPart(id, index, bytes) {
      await db.put("parts", bytes, [id, index]);
    },
    async parts(id) {
      const tx = db.transaction("parts");
      const out = new Map<number, Uint8Array<ArrayBuffer>>();
      for (let c = await tx.store.openCursor(range(id)); c; c = await c.continue()) {
        out.set((c.key as [string, number])[1], new Uint8Array(c.value as Uint8Array));
      }
      return out;
    },
    async deleteParts(id) {
      await db.delete("parts", range(id));
    },
    async putState(state) {
      await db.put("state", state);
    },
    async getState(id) {
      return (await db.get("state", id) as StoredFileState | undefined) ?? null;
    },
    async unfinished() {
      const all = await db.getAll("state") as StoredFileState[];
      return all.filter((s) => s.status === "sending" || s.status === "receiving");
    },
    close() {
      db.close();
    },
  };
}

/** A file store in memory (tests). */
export function createMemoryFileStore(): FileStore & { partWrites: number } {
  const blobs = new Map<string, Uint8Array<ArrayBuffer>>();
  const parts = new Map<string, Map<number, Uint8Array<ArrayBuffer>>>();
  const states = new Map<string, StoredFileState>();
  const store = {
    partWrites: 0,
    putBlob: (id: string, b: Uint8Array<ArrayBuffer>) => Promise.resolve(void blobs.set(id, b)),
    getBlob: (id: string) => Promise.resolve(blobs.get(id) ?? null),
    putPart(id: string, index: number, b: Uint8Array<ArrayBuffer>) {
      store.partWrites++;
      let m = parts.get(id);
      if (!m) parts.set(id, m = new Map());
      m.set(index, b);
      return Promise.resolve();
    },
    parts: (id: string) => Promise.resolve(new Map(parts.get(id) ?? [])),
    deleteParts: (id: string) => Promise.resolve(void parts.delete(id)),
    putState: (s: StoredFileState) => Promise.resolve(void states.set(s.id, { ...s })),
    getState: (id: string) => Promise.resolve(states.get(id) ? { ...states.get(id)! } : null),
    unfinished: () =>
      Promise.resolve(
        [...states.values()].filter((s) => s.status === "sending" || s.status === "receiving"),
      ),
    close() {},
  };
  return store;
}

/** A store opened on first use (the session starts without waiting for IndexedDB). */
export function lazyFileStore(open: () => Promise<FileStore>): FileStore {
  let opened: Promise<FileStore> | null = null;
  let closed = false;
  const get = () => opened ??= open();
  const call = <K extends Exclude<keyof FileStore, "close">>(k: K) =>
    (async (...args: unknown[]) => {
      const store = await get();
      // deno-lint-ignore no-explicit-any
      return await (store[k] as any)(...args);
    }) as FileStore[K];
  return {
    putBlob: call("putBlob"),
    getBlob: call("getBlob"),
    putPart: call("putPart"),
    parts: call("parts"),
    deleteParts: call("deleteParts"),
    putState: call("putState"),
    getState: call("getState"),
    unfinished: call("unfinished"),
    close() {
      if (closed) return;
      closed = true;
      void opened?.then((s) => s.close(), () => {});
    },
  };
}
