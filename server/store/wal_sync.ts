/**
 * Durability off the event loop. `node:sqlite` is synchronous: a commit with synchronous=FULL
 * waits for the disk (fsync of the WAL) with the whole server stopped — under bench:store a
 * third of each server's time. A hot write can instead commit with synchronous=NORMAL (the WAL
 * frames are written, a kill -9 loses nothing) and then wait, without blocking, for a sync of
 * the WAL file run on another thread ({@link WalSync.sync}, `fdatasync`): once it resolves the
 * commit is as durable as a FULL commit, and only then is the write acknowledged. Syncs are
 * shared: a commit waits for the next sync that starts after it (at most one runs at a time),
 * so commits that meet the disk together share one flush.
 *
 * Why the WAL alone: in WAL mode a commit is durable once its frames (and the WAL header) are
 * on disk, which is what FULL syncs at each commit; the database file is synced by checkpoints,
 * which synchronous=NORMAL keeps doing. The WAL file keeps its inode while the connection is
 * open (SQLite resets it by overwriting; it deletes it only when the last connection closes),
 * so one open handle covers every commit of that connection.
 */

/** What a {@link WalSync} needs of a file: `fdatasync` run off the event loop. */
export interface SyncableFile {
  syncData(): Promise<void>;
  close(): void;
}

/** Shares syncs of one file among the commits waiting for one. */
export class WalSync {
  #file: SyncableFile;
  /** The sync running, if any. */
  #running: Promise<void> | undefined;
  /** The sync that starts when the running one ends, shared by every commit made meanwhile. */
  #next: Promise<void> | undefined;
  #syncs = 0;
  #closed = false;

  /** Wraps an open handle of the WAL file. */
  constructor(file: SyncableFile) {
    this.#file = file;
  }

  /** Opens the WAL of the database at `dbPath` (which must be in WAL mode and open). */
  static open(dbPath: string): WalSync {
    return new WalSync(Deno.openSync(`${dbPath}-wal`, { read: true }));
  }

  /** Syncs run so far. */
  get syncs(): number {
    return this.#syncs;
  }

  /**
   * Resolves once everything written to the file before this call is on disk: by a sync that
   * starts after it. Rejects when that sync fails (the write must then not be acknowledged).
   */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("The database is closed"));
    if (!this.#running) return this.#start();
    this.#next ??= this.#running.then(
      () => this.#startNext(),
      () => this.#startNext(),
    );
    return this.#next;
  }

  #startNext(): Promise<void> {
    this.#next = undefined;
    return this.#start();
  }

  #start(): Promise<void> {
    this.#syncs++;
    const run = this.#file.syncData();
    this.#running = run;
    const done = () => {
      if (this.#running === run) this.#running = undefined;
    };
    run.then(done, done);
    return run;
  }

  /** Closes the handle once the syncs under way have ended. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([this.#running, this.#next]);
    this.#file.close();
  }
}
