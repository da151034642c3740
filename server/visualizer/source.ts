/**
 * Where the page's pictures come from: a {@link PictureSource} is anything that has a latest
 * picture and tells subscribers of each new one. {@link PictureHub} is the plain broadcaster the
 * simulator publishes to; the cluster's {@link RingGatherer} publishes through one too.
 */
import type { RingPicture } from "./picture.ts";

/** A stream of ring pictures. */
export interface PictureSource {
  /** The most recent picture, if any. */
  latest(): RingPicture | undefined;
  /** Calls `listener` with each new picture; returns the unsubscriber. */
  subscribe(listener: (picture: RingPicture) => void): () => void;
  /** Calls `listener` once when the source closes (server shutdown): streams end then. */
  onClose(listener: () => void): () => void;
}

/**
 * Broadcasts published pictures to subscribers. `onWatch` is told when the number of subscribers
 * goes from 0 to 1 (true) and back to 0 (false), so a producer can work only while watched.
 */
export class PictureHub implements PictureSource {
  #latest: RingPicture | undefined;
  #listeners = new Set<(picture: RingPicture) => void>();
  #closers = new Set<() => void>();
  #onWatch: (isWatched: boolean) => void;

  /** Creates a hub with no picture yet. */
  constructor(onWatch: (isWatched: boolean) => void = () => {}) {
    this.#onWatch = onWatch;
  }

  /** Stores `picture` as the latest and hands it to every subscriber. */
  publish(picture: RingPicture): void {
    this.#latest = picture;
    for (const listener of [...this.#listeners]) listener(picture);
  }

  latest(): RingPicture | undefined {
    return this.#latest;
  }

  subscribe(listener: (picture: RingPicture) => void): () => void {
    this.#listeners.add(listener);
    if (this.#listeners.size === 1) this.#onWatch(true);
    return () => {
      if (this.#listeners.delete(listener) && this.#listeners.size === 0) this.#onWatch(false);
    };
  }

  onClose(listener: () => void): () => void {
    this.#closers.add(listener);
    return () => this.#closers.delete(listener);
  }

  /** Ends every stream (their `onClose` listeners run) and forgets the subscribers. */
  close(): void {
    for (const closer of [...this.#closers]) closer();
    this.#closers.clear();
    this.#listeners.clear();
  }
}
