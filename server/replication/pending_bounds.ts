/**
 * Pending counts for a primary's quotas without reading a whole mailbox on every group commit. A
 * count read once, plus what the store inserted since (it counts every entry offered to it;
 * nothing else adds entries, and acknowledgements, expiry and hand-off only remove some), is
 * never less than the count now: a quota check passes on that bound, and only a bound that would
 * refuse is read again, exactly. A put is refused exactly when the exact count is past a quota.
 */
import type { MailboxStore } from "../store/mod.ts";

/** Pending entries and their envelope characters. */
export interface PendingTally {
  count: number;
  chars: number;
}

/** Counts read from the store, by recipient and by recipient and sender, kept as bounds. */
export class PendingBounds {
  #store: MailboxStore;
  #maxKeys: number;
  #to = new Map<string, { count: number; rows: number }>();
  #from = new Map<string, { count: number; chars: number; rows: number; insertedChars: number }>();

  /** Reads counts from `store`; remembers at most `maxKeys` of each kind. */
  constructor(store: MailboxStore, maxKeys = 10_000) {
    this.#store = store;
    this.#maxKeys = maxKeys;
  }

  /** At least the entries pending for `recipient`; exactly that with `exact`. */
  to(recipient: string, exact = false): number {
    const inserted = this.#store.inserted;
    const known = exact ? undefined : this.#to.get(recipient);
    if (known) return known.count + (inserted.rows - known.rows);
    const count = this.#store.countPending(recipient);
    if (this.#to.size >= this.#maxKeys) this.#to.clear();
    this.#to.set(recipient, { count, rows: inserted.rows });
    return count;
  }

  /**
   * At least the entries `sender` left pending for `recipient`, and at least their envelope
   * characters; exactly those with `exact`.
   */
  from(recipient: string, sender: string, exact = false): PendingTally {
    const inserted = this.#store.inserted;
    // Usernames hold no "/".
    const key = `${recipient}/${sender}`;
    const known = exact ? undefined : this.#from.get(key);
    if (known) {
      return {
        count: known.count + (inserted.rows - known.rows),
        chars: known.chars + (inserted.chars - known.insertedChars),
      };
    }
    const { count, chars } = this.#store.countPendingFrom(recipient, sender);
    if (this.#from.size >= this.#maxKeys) this.#from.clear();
    this.#from.set(key, { count, chars, rows: inserted.rows, insertedChars: inserted.chars });
    return { count, chars };
  }
}
