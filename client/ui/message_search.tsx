/** Full-text search over the local history; a result opens its conversation at that message. */
import type { ComponentChildren } from "preact";
import { useMemo, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import { MATCH_END, MATCH_START } from "../history.ts";

const day = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

/** A snippet with its matched words marked (built as nodes: the text is never parsed as HTML). */
function marked(snippet: string): ComponentChildren[] {
  const parts: ComponentChildren[] = [];
  snippet.split(MATCH_START).forEach((part, i) => {
    if (i === 0) return void parts.push(part);
    const [match, rest] = part.split(MATCH_END);
    parts.push(<mark key={i}>{match}</mark>, rest ?? "");
  });
  return parts;
}

/** The search box above the contacts, and its results while something is typed. */
export function MessageSearch({ model }: { model: ChatModel }) {
  const [query, setQuery] = useState("");
  const history = model.messages.value; // search again when the history changes
  const hits = useMemo(() => query.trim() ? model.search(query) : [], [query, history]);
  return (
    <div class="search" role="search">
      <label class="sr-only" for="search-input">Search messages</label>
      <input
        id="search-input"
        type="search"
        data-testid="search-input"
        placeholder="Search messages"
        value={query}
        maxLength={200}
        onInput={(e) => setQuery(e.currentTarget.value)}
      />
      {query.trim() && (
        <ol class="search-results" aria-label="Search results" data-testid="search-results">
          {hits.length === 0 && <li class="empty">No messages found.</li>}
          {hits.map((hit) => (
            <li key={hit.id}>
              <button
                type="button"
                class="search-hit"
                data-testid="search-hit"
                data-id={hit.id}
                onClick={() => {
                  if (model.showMessage(hit.peer, hit.id)) setQuery("");
                }}
              >
                <span class="hit-where">
                  {hit.peer} · {day.format(hit.sentAt)}
                </span>
                <span class="hit-text">{marked(hit.snippet)}</span>
              </button>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}
