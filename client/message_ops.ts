/**
 * Replies, reactions, edits and deletes (issue 15). Each is an ordinary chat message with its own
 * id: its *text* carries the operation, so it is sealed (end-to-end encrypted and signed) like any
 * message, goes over the data channel, the relay or the mailbox, and is stored, acknowledged and
 * handed over exactly once by the existing machinery (`outbox.ts`, `inbox.ts`, `history.ts`).
 * The servers cannot tell an operation from a message.
 *
 * The text forms (the first character is a control character no one types):
 * - `␟<replyTo>␟<text>`: a message quoting message `replyTo`;
 * - `␝edit␝<target>␝<text>`: the author's new text of `target`;
 * - `␝react␝<target>␝+<emoji>` / `-<emoji>`: a reaction set / taken back;
 * - `␝delete␝<target>␝`: the author deletes `target` for everyone;
 * - `␞deleted`: a message deleted for everyone (what its row holds then; sent as such if it was
 *   deleted before it went out); `␞hidden`: deleted on this device only (never sent).
 * Every other text is plain text. (␝ is U+001D, ␞ U+001E, ␟ U+001F.)
 *
 * Operation rows (␝) are not shown and not indexed for search; the state they give a message
 * (text after the last edit, reactions, deleted) is folded at read time by {@link foldOps}, so
 * they apply in whatever order they arrive. Only a delete changes stored rows: the deleted
 * message's text becomes `␞deleted` (gone from the search index too), also when the delete
 * arrived first ({@link MessageOps.afterStore}). An edit or delete counts only from the
 * message's author, in its own conversation; a reaction counts from either user of the
 * conversation, one per user and emoji (the latest set/unset wins).
 */
import { MAX_TEXT_LENGTH, MESSAGE_ID_PATTERN } from "../shared/mod.ts";
import type { MessageRow } from "./history.ts";

/** The reactions on offer (and the only ones accepted). */
export const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"] as const;
export type Reaction = (typeof REACTIONS)[number];

const OP = "\u001d";
const TOMB = "\u001e";
const REPLY = "\u001f";
/** The text of a message deleted for everyone. */
export const DELETED_TEXT = `${TOMB}deleted`;
/** The text of a message deleted on this device only. */
export const HIDDEN_TEXT = `${TOMB}hidden`;
/** Most UTF-8 bytes of a message text (as `chat_model.ts` checks for plain messages). */
const MAX_TEXT_BYTES = 10_000;

/** What a message text means. */
export type MessageBody =
  | { kind: "text"; text: string }
  | { kind: "reply"; replyTo: string; text: string }
  | { kind: "deleted" }
  | { kind: "hidden" }
  | { kind: "edit"; target: string; text: string }
  | { kind: "react"; target: string; emoji: Reaction; on: boolean }
  | { kind: "delete"; target: string };

/** An operation on another message. */
export type MessageOp = Extract<MessageBody, { target: string }>;

/** A malformed message text, or one too long once encoded. */
export class MessageOpError extends Error {
  override name = "MessageOpError";
}

const isMarker = (c: string | undefined) => c === OP || c === TOMB || c === REPLY;

function checkId(id: string, what: string): string {
  if (!MESSAGE_ID_PATTERN.test(id)) throw new MessageOpError(`${what} is not a message id`);
  return id;
}

function checkText(text: string, what: string): string {
  if (text.length === 0 || text.trim().length === 0) {
    throw new MessageOpError(`${what} is empty`);
  }
  if (isMarker(text[0])) throw new MessageOpError(`${what} starts with a control character`);
  return text;
}

/** The text that carries `body`. Throws {@link MessageOpError} if it is invalid or too long. */
export function encodeBody(body: MessageBody): string {
  let text: string;
  switch (body.kind) {
    case "text":
      text = plainText(body.text);
      break;
    case "reply":
      text = `${REPLY}${checkId(body.replyTo, "replyTo")}${REPLY}${checkText(body.text, "text")}`;
      break;
    case "deleted":
      text = DELETED_TEXT;
      break;
    case "hidden":
      text = HIDDEN_TEXT;
      break;
    case "edit":
      text = `${OP}edit${OP}${checkId(body.target, "target")}${OP}${checkText(body.text, "text")}`;
      break;
    case "react":
      if (!REACTIONS.includes(body.emoji)) throw new MessageOpError("Not an offered reaction");
      text = `${OP}react${OP}${checkId(body.target, "target")}${OP}${
        body.on ? "+" : "-"
      }${body.emoji}`;
      break;
    case "delete":
      text = deleteOpText(body.target);
      break;
  }
  if (text.length > MAX_TEXT_LENGTH || new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
    throw new MessageOpError(`Message is too long: at most about ${MAX_TEXT_LENGTH} characters`);
  }
  return text;
}

/** The text of the author's delete of `target`. */
export function deleteOpText(target: string): string {
  return `${OP}delete${OP}${checkId(target, "target")}${OP}`;
}

/**
 * Plain text as typed, made unambiguous: a leading control character that would make it an
 * operation is dropped.
 */
export function plainText(text: string): string {
  let i = 0;
  while (i < text.length && isMarker(text[i])) i++;
  return text.slice(i);
}

/**
 * What a stored or received message text means. Throws {@link MessageOpError} for a text that
 * starts like an operation, reply or tombstone but is not a valid one (an unknown kind, a bad
 * id, a reaction not on offer, an empty text…).
 */
export function parseBody(text: string): MessageBody {
  const first = text[0];
  if (!isMarker(first)) return { kind: "text", text };
  if (first === TOMB) {
    if (text === DELETED_TEXT) return { kind: "deleted" };
    if (text === HIDDEN_TEXT) return { kind: "hidden" };
    throw new MessageOpError("Unknown tombstone");
  }
  if (first === REPLY) {
    const end = text.indexOf(REPLY, 1);
    if (end < 0) throw new MessageOpError("Malformed reply");
    return {
      kind: "reply",
      replyTo: checkId(text.slice(1, end), "replyTo"),
      text: checkText(text.slice(end + 1), "text"),
    };
  }
  const kindEnd = text.indexOf(OP, 1);
  const targetEnd = kindEnd < 0 ? -1 : text.indexOf(OP, kindEnd + 1);
  if (targetEnd < 0) throw new MessageOpError("Malformed operation");
  const kind = text.slice(1, kindEnd);
  const target = checkId(text.slice(kindEnd + 1, targetEnd), "target");
  const rest = text.slice(targetEnd + 1);
  switch (kind) {
    case "edit":
      return { kind: "edit", target, text: checkText(rest, "text") };
    case "react": {
      const emoji = rest.slice(1) as Reaction;
      if ((rest[0] !== "+" && rest[0] !== "-") || !REACTIONS.includes(emoji)) {
        throw new MessageOpError("Not an offered reaction");
      }
      return { kind: "react", target, emoji, on: rest[0] === "+" };
    }
    case "delete":
      if (rest !== "") throw new MessageOpError("Malformed delete");
      return { kind: "delete", target };
    default:
      throw new MessageOpError("Unknown operation");
  }
}

/**
 * What a text received from a contact means; throws {@link MessageOpError} for what no client
 * sends (malformed operations, a "deleted on this device" marker).
 */
export function parseReceivedBody(text: string): MessageBody {
  const body = parseBody(text);
  if (body.kind === "hidden") throw new MessageOpError("A local tombstone was sent");
  return body;
}

/**
 * Whether a stored text is final: a tombstone, or a delete (an edit becomes one once its message
 * is deleted). A row's text changes only to a final one, so when two copies of a row meet (the
 * snapshot and the log, a hand-over, an import) a final text wins.
 */
export function isFinalText(text: string): boolean {
  return text[0] === TOMB || text.startsWith(`${OP}delete${OP}`);
}

/** Whether a stored text is an operation (not shown as a message, not searched). */
export function isOpText(text: string): boolean {
  return text[0] === OP;
}

/** The body of a stored row, or plain text if it does not parse (never throws). */
export function bodyOf(text: string): MessageBody {
  try {
    return parseBody(text);
  } catch {
    return { kind: "text", text };
  }
}

/** The text a row shows (its own, before edits): empty for a deleted one. */
export function shownText(text: string): string {
  const body = bodyOf(text);
  return body.kind === "text" || body.kind === "reply" ? body.text : "";
}

/** A search snippet without the reply header a reply's text starts with. */
export function cleanSnippet(snippet: string): string {
  const start = snippet.indexOf(REPLY);
  if (start < 0) return snippet;
  const end = snippet.indexOf(REPLY, start + 1);
  return end < 0 ? snippet.slice(0, start) : snippet.slice(0, start) + snippet.slice(end + 1);
}

/** Whether op row `op` may change (edit, delete) `target`: only its author, in its chat. */
export function mayChange(op: MessageRow, target: MessageRow): boolean {
  return op.sender === target.sender && op.peer === target.peer && op.id !== target.id;
}

/** How one reaction stands on a message. */
export interface ReactionCount {
  emoji: Reaction;
  count: number;
  /** This user is one of them. */
  mine: boolean;
}

/** What a shown message looks like once its operations are applied. */
export interface MessageView {
  /** The text to show (after the last edit); empty when deleted. */
  text: string;
  deleted: boolean;
  /** Send time of the edit shown, or null if never edited. */
  editedAt: number | null;
  /** The quoted message, if this is a reply. */
  replyTo: QuotedMessage | null;
  /** Reactions with a count above zero, in {@link REACTIONS} order. */
  reactions: ReactionCount[];
}

/** What a reply shows of the message it quotes. */
export interface QuotedMessage {
  id: string;
  /** Its sender, or null if it is not stored here. */
  sender: string | null;
  /** The start of its (edited) text; empty if unknown or deleted. */
  snippet: string;
  deleted: boolean;
}

/** Longest snippet of a quoted message, in characters. */
export const QUOTE_SNIPPET = 80;

const later = (a: MessageRow, b: MessageRow) =>
  a.sentAt !== b.sentAt ? a.sentAt > b.sentAt : a.id > b.id;

/**
 * The views of `rows` (messages of one conversation) given the operation rows `ops` of that
 * conversation, in any order: the last edit by the author wins (send time, then id), a delete by
 * the author wins over everything, and per user and emoji the last reaction op wins. `lookup`
 * finds a quoted message that is not among `rows`.
 */
export function foldOps(
  rows: readonly MessageRow[],
  ops: readonly MessageRow[],
  me: string,
  lookup: (id: string) => MessageRow | null = () => null,
): Map<string, MessageView> {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const edits = new Map<string, MessageRow & { newText: string }>();
  const deleted = new Set<string>();
  /** target → `${user}␝${emoji}` → the latest op. */
  const reactions = new Map<string, Map<string, { row: MessageRow; on: boolean }>>();
  const find = (id: string) => byId.get(id) ?? null;
  for (const op of ops) {
    const body = bodyOf(op.text);
    if (body.kind !== "edit" && body.kind !== "react" && body.kind !== "delete") continue;
    const target = find(body.target);
    if (!target) continue;
    if (body.kind === "react") {
      if (op.peer !== target.peer) continue;
      let perUser = reactions.get(target.id);
      if (!perUser) reactions.set(target.id, perUser = new Map());
      const key = `${op.sender}${OP}${body.emoji}`;
      const have = perUser.get(key);
      if (!have || later(op, have.row)) perUser.set(key, { row: op, on: body.on });
      continue;
    }
    if (!mayChange(op, target)) continue;
    if (body.kind === "delete") {
      deleted.add(target.id);
      continue;
    }
    const have = edits.get(target.id);
    if (!have || later(op, have)) edits.set(target.id, { ...op, newText: body.text });
  }
  const views = new Map<string, MessageView>();
  const viewOf = (row: MessageRow, withQuote: boolean): MessageView => {
    const body = bodyOf(row.text);
    const isDeleted = deleted.has(row.id) || body.kind === "deleted";
    const edit = isDeleted ? undefined : edits.get(row.id);
    const original = body.kind === "text" || body.kind === "reply" ? body.text : "";
    let replyTo: QuotedMessage | null = null;
    if (withQuote && body.kind === "reply" && !isDeleted) {
      const quoted = find(body.replyTo) ?? lookup(body.replyTo);
      const q = quoted ? (views.get(quoted.id) ?? viewOf(quoted, false)) : null;
      replyTo = {
        id: body.replyTo,
        sender: quoted?.sender ?? null,
        snippet: q ? q.text.slice(0, QUOTE_SNIPPET) : "",
        deleted: q?.deleted ?? false,
      };
    }
    const counts: ReactionCount[] = [];
    if (!isDeleted) {
      for (const emoji of REACTIONS) {
        let count = 0;
        let mine = false;
        for (const [key, r] of reactions.get(row.id) ?? []) {
          if (!r.on || !key.endsWith(`${OP}${emoji}`)) continue;
          count++;
          if (r.row.sender === me) mine = true;
        }
        if (count > 0) counts.push({ emoji, count, mine });
      }
    }
    return {
      text: isDeleted ? "" : edit?.newText ?? original,
      deleted: isDeleted,
      editedAt: edit ? edit.sentAt : null,
      replyTo,
      reactions: counts,
    };
  };
  for (const row of rows) views.set(row.id, viewOf(row, false));
  for (const row of rows) {
    if (bodyOf(row.text).kind === "reply") views.set(row.id, viewOf(row, true));
  }
  return views;
}

/** The parts of a {@link History} that {@link MessageOps} uses. */
export interface OpsStore {
  get(id: string): MessageRow | null;
  /** The operation rows of the conversation with `peer` whose text starts with `prefix`. */
  opsWithPrefix(peer: string, prefix: string): MessageRow[];
  /** Replaces a row's text (a tombstone); resolves the new row once durable, or null. */
  replaceText(id: string, text: string): Promise<MessageRow | null>;
}

/** Applies the lasting effect of deletes on the stored rows, whatever order rows arrive in. */
export class MessageOps {
  #store: OpsStore;

  constructor(store: OpsStore) {
    this.#store = store;
  }

  /**
   * `row` was just stored (received, or sent by this user): a delete removes its target's text
   * (and the author's edits of it); a message whose delete came first is removed now; an edit of
   * a message already deleted keeps no text. Resolves whether something changed.
   */
  async afterStore(row: MessageRow): Promise<boolean> {
    const body = bodyOf(row.text);
    switch (body.kind) {
      case "delete": {
        const target = this.#store.get(body.target);
        if (!target || !mayChange(row, target)) return false;
        return await this.#erase(target, row);
      }
      case "edit": {
        const target = this.#store.get(body.target);
        if (
          !target || !mayChange(row, target) || bodyOf(target.text).kind !== "deleted" ||
          row.status !== "delivered"
        ) return false;
        await this.#store.replaceText(row.id, deleteOpText(target.id));
        return true;
      }
      case "text":
      case "reply": {
        const deletes = this.#store.opsWithPrefix(row.peer, deleteOpText(row.id));
        const del = deletes.find((d) => mayChange(d, row));
        return del ? await this.#erase(row, del) : false;
      }
      default:
        return false;
    }
  }

  async #erase(target: MessageRow, by: MessageRow): Promise<boolean> {
    const body = bodyOf(target.text);
    let changed = false;
    if (body.kind !== "deleted" && body.kind !== "hidden") {
      await this.#store.replaceText(target.id, DELETED_TEXT);
      changed = true;
    }
    for (const edit of this.#store.opsWithPrefix(target.peer, `${OP}edit${OP}${target.id}${OP}`)) {
      if (!mayChange(by, edit) || edit.status !== "delivered") continue;
      await this.#store.replaceText(edit.id, deleteOpText(target.id));
      changed = true;
    }
    return changed;
  }
}
