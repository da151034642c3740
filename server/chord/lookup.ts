/**
 * Lookup: finding the node that owns a key.
 *
 * The lookup is ITERATIVE: the originating node asks each hop "who owns this key, or who is
 * closer?" and contacts the next hop itself. We chose iterative over recursive because
 * (1) the originator sees every hop fail or succeed, so it routes around a dead node by trying
 * the next-best candidate instead of waiting for a timeout deep inside someone else's request;
 * (2) no node holds request state on behalf of others, so a crash mid-lookup loses nothing;
 * (3) hop counts, timeouts and retries are measured and bounded in one place.
 * The cost is one extra network leg per hop versus recursive forwarding, which the hop count
 * (the figure the CHORD paper reports) does not include.
 *
 * Hop counting: `hops` is the number of `find_successor` requests answered by other nodes. The
 * answer comes from the owner's predecessor, so the owner itself is not contacted; a key owned
 * by the originator or its successor takes 0 hops.
 */

import { ChordLookupError } from "./errors.ts";
import { between, type ChordId, type IdSpace } from "./id.ts";
import type { NodeRef } from "./node_ref.ts";

/** The owner of a key and how many hops it took to find it. */
export interface LookupResult {
  /** The live node responsible for the key (the key's successor on the ring). */
  readonly owner: NodeRef;
  /** Number of remote lookup steps (see the module comment). */
  readonly hops: number;
  /**
   * The nodes after `owner` in the successor list of the node that named it: the owner if
   * `owner` has just died (used by join, which must contact its successor).
   */
  readonly alternatives: readonly NodeRef[];
}

/** One node's answer to "who owns `key`?". */
export type LookupStep =
  | {
    readonly kind: "found";
    readonly owner: NodeRef;
    /** Who to try, in order, if `owner` turns out dead (the answering node's later successors). */
    readonly alternatives: readonly NodeRef[];
  }
  | {
    readonly kind: "closer";
    /** Next hops to try, best first. */
    readonly nodes: readonly NodeRef[];
    /** The answering node's successor list. */
    readonly successors: readonly NodeRef[];
  };

/** What {@link iterativeLookup} needs from the node running it. */
export interface LookupContext {
  /** The id space. */
  readonly space: IdSpace;
  /** The node running the lookup. */
  readonly self: NodeRef;
  /** Give up after this many hops. */
  readonly maxHops: number;
  /** This node's own answer (no network). */
  localStep(key: ChordId): LookupStep;
  /** Asks `node` for its answer; rejects when the node is dead or misbehaves. */
  askRemote(node: NodeRef, key: ChordId): Promise<LookupStep>;
  /** Called when `node` failed to answer, so it stops being used as a hint. */
  forget(node: NodeRef): void;
}

/**
 * Runs an iterative lookup for `key`, starting from `first` (a step already answered by the node
 * `firstFrom`, `undefined` when only its address was known) with `hops` already spent. Candidates at each step are
 * tried best first; when all fail, the lookup backtracks to the previous step's alternatives.
 * Every accepted candidate is strictly closer to `key` than the node that named it, so the
 * lookup terminates.
 */
export async function iterativeLookup(
  ctx: LookupContext,
  key: ChordId,
  first: LookupStep,
  hops: number,
  firstFrom: NodeRef | undefined,
): Promise<LookupResult> {
  const { space } = ctx;
  if (first.kind === "found") return { owner: first.owner, hops, alternatives: first.alternatives };
  const failed = new Set<string>();
  const closerThan = (from: NodeRef | undefined, nodes: readonly NodeRef[]) => {
    if (from === undefined) return [...nodes];
    const limit = space.distance(from.id, key);
    return nodes.filter((n) => n.id !== key && space.distance(n.id, key) < limit);
  };
  interface Frame {
    readonly from: NodeRef | undefined;
    readonly candidates: NodeRef[];
    readonly successors: readonly NodeRef[];
  }
  const frameOf = (from: NodeRef | undefined, step: LookupStep & { kind: "closer" }): Frame => ({
    from,
    candidates: closerThan(from, step.nodes),
    successors: step.successors,
  });
  const stack: Frame[] = [frameOf(firstFrom, first)];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    const candidate = frame.candidates.shift();
    if (candidate === undefined) {
      // Every node this frame's node named as closer is dead. Those include all of its successors
      // preceding the key, so the key's owner is its first successor at or after the key
      // (Stoica et al. 2001, §5.3: routing around failures with the successor list).
      const owner = frame.from === undefined
        ? undefined
        : ownerFromSuccessors(frame.from, frame.successors, failed, key);
      if (owner !== undefined) {
        const later = frame.successors.slice(frame.successors.indexOf(owner) + 1);
        return { owner, hops, alternatives: later };
      }
      stack.pop();
      continue;
    }
    if (failed.has(candidate.address)) continue;
    let step: LookupStep;
    if (candidate.address === ctx.self.address) {
      step = ctx.localStep(key);
    } else {
      try {
        step = await ctx.askRemote(candidate, key);
      } catch {
        failed.add(candidate.address);
        ctx.forget(candidate);
        continue;
      }
      hops++;
    }
    if (step.kind === "found") return { owner: step.owner, hops, alternatives: step.alternatives };
    if (hops >= ctx.maxHops) {
      throw new ChordLookupError(key, hops, `gave up after ${hops} hops`);
    }
    stack.push(frameOf(candidate, step));
  }
  throw new ChordLookupError(key, hops, "every route failed");
}

function ownerFromSuccessors(
  from: NodeRef,
  successors: readonly NodeRef[],
  failed: ReadonlySet<string>,
  key: ChordId,
): NodeRef | undefined {
  for (const node of successors) {
    if (failed.has(node.address)) continue;
    if (between(from.id, key, node.id, "(]")) return node;
    // A live-looking successor before the key that was never tried: do not guess past it.
    return undefined;
  }
  return undefined;
}
