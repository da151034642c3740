/** Counters and gauges rendered in the Prometheus text format at `/metrics`. */

type Labels = Record<string, string>;

function key(name: string, labels?: Labels): string {
  if (!labels) return name;
  const parts = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`);
  return `${name}{${parts.join(",")}}`;
}

/** A small registry of named counters and gauges, with optional labels. */
export class Metrics {
  #values = new Map<string, number>();
  #help = new Map<string, { help: string; kind: "counter" | "gauge" }>();

  /** Declares a metric so it is rendered (as 0) before its first use. */
  describe(name: string, kind: "counter" | "gauge", help: string): void {
    this.#help.set(name, { help, kind });
    if (![...this.#values.keys()].some((k) => k === name || k.startsWith(`${name}{`))) {
      this.#values.set(name, 0);
    }
  }

  /** Adds `by` (default 1) to a counter. */
  inc(name: string, labels?: Labels, by = 1): void {
    const k = key(name, labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  /** Sets a gauge. */
  set(name: string, value: number, labels?: Labels): void {
    this.#values.set(key(name, labels), value);
  }

  /** Current value of a series (0 when never touched). */
  get(name: string, labels?: Labels): number {
    return this.#values.get(key(name, labels)) ?? 0;
  }

  /** The Prometheus text exposition of every series. */
  render(): string {
    const lines: string[] = [];
    const names = new Set([...this.#help.keys()]);
    for (const k of this.#values.keys()) names.add(k.split("{")[0]!);
    for (const name of [...names].sort()) {
      const meta = this.#help.get(name);
      if (meta) lines.push(`# HELP ${name} ${meta.help}`, `# TYPE ${name} ${meta.kind}`);
      for (const [k, v] of this.#values) {
        if (k === name || k.startsWith(`${name}{`)) lines.push(`${k} ${v}`);
      }
    }
    return lines.join("\n") + "\n";
  }
}
