/**
 * Files in the chat (issue 15): the attach button, a message's file (thumbnail, progress, cancel,
 * full-size image or download link) and the size-limit setting.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import { type FileMeta, isInlineImage, validateFileMeta } from "../../shared/mod.ts";
import { DEFAULT_MAX_FILE_MB, MAX_FILE_MB_KEY } from "../file_transfer.ts";

/** The "attach a file" button of the composer. */
export function AttachButton({ model, disabled }: { model: ChatModel; disabled: boolean }) {
  const input = useRef<HTMLInputElement>(null);
  const pick = async (e: Event) => {
    const el = e.currentTarget as HTMLInputElement;
    const files = [...(el.files ?? [])];
    el.value = "";
    for (const f of files) {
      await model.sendFile({
        name: f.name,
        type: f.type,
        bytes: new Uint8Array(await f.arrayBuffer()),
      });
    }
  };
  return (
    <>
      <input
        ref={input}
        type="file"
        hidden
        aria-label="File or image to send"
        id="file-input"
        data-testid="file-input"
        disabled={disabled}
        onChange={(e) => void pick(e)}
      />
      <button
        type="button"
        class="attach"
        data-testid="attach"
        disabled={disabled}
        aria-label="Attach a file"
        onClick={() => input.current?.click()}
      >
        📎
      </button>
    </>
  );
}

function metaOf(json: string): FileMeta | null {
  try {
    return validateFileMeta(JSON.parse(json));
  } catch {
    return null;
  }
}

function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function b64(url: string): string {
  return url.replaceAll("-", "+").replaceAll("_", "/");
}

const STATUS_TEXT: Record<string, string> = {
  cancelled: "cancelled",
  refused: "not downloaded: larger than your limit",
  failed: "not all stored on the servers: the rest goes when they are online",
  damaged: "file damaged",
};

/** The file of message `id` (its JSON {@link FileMeta} in `attachment`). */
export function Attachment(
  { model, id, attachment, own }: {
    model: ChatModel;
    id: string;
    attachment: string;
    own: boolean;
  },
) {
  const files = model.files.value;
  const progress = files?.progress.value[id];
  const [url, setUrl] = useState<string | null>(null);
  const [isFull, setFull] = useState(false);
  const meta = metaOf(attachment);
  const status = progress?.status;
  const hasContent = status === "complete" ||
    (own && status !== undefined && status !== "missing");

  useEffect(() => {
    if (files && !progress) void files.load(id);
  }, [files, id, !progress]);
  useEffect(() => {
    if (!files || !meta || !hasContent) return;
    let objectUrl: string | null = null;
    let live = true;
    void files.content(id).then((bytes) => {
      if (!bytes || !live) return;
      objectUrl = URL.createObjectURL(new Blob([bytes], { type: meta.mime }));
      setUrl(objectUrl);
    });
    return () => {
      live = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [files, id, hasContent]);

  if (!meta) return <span class="attachment" data-testid="attachment">unreadable file</span>;
  const isImage = isInlineImage(meta.mime);
  const inFlight = status === "sending" || status === "receiving";
  const pct = progress && progress.total > 0
    ? Math.floor((progress.done / progress.total) * 100)
    : 0;
  return (
    <span
      class="attachment"
      data-testid="attachment"
      data-status={status ?? "unknown"}
      data-name={meta.name}
    >
      {meta.thumb && (
        <button
          type="button"
          class="thumbnail"
          disabled={!url}
          aria-label={`Open ${meta.name} full size`}
          onClick={() => setFull(true)}
        >
          <img
            data-testid="thumbnail"
            alt={meta.name}
            src={`data:${meta.thumbMime};base64,${b64(meta.thumb)}`}
          />
        </button>
      )}
      <span class="file-line">
        {url && !(isImage && meta.thumb)
          ? (
            <a href={url} download={meta.name} data-testid="file-download">
              {meta.name}
            </a>
          )
          : <span class="file-name">{meta.name}</span>}
        {` · ${sizeText(meta.size)}`}
      </span>
      {inFlight && progress && (
        <span class="file-progress">
          <progress data-testid="file-progress" value={progress.done} max={progress.total} />
          {` ${pct}%`}
          <button type="button" data-testid="file-cancel" onClick={() => void files?.cancel(id)}>
            Cancel
          </button>
        </span>
      )}
      {status === "missing" && (
        <span class="file-state" data-testid="file-missing">
          {own
            ? "file not on this device — send it again"
            : `file not on this device — ask ${progress?.peer ?? "the sender"} to send it again`}
        </span>
      )}
      {status && STATUS_TEXT[status] && (
        <span class="file-state" data-testid={status === "damaged" ? "file-damaged" : "file-state"}>
          {STATUS_TEXT[status]}
        </span>
      )}
      {isFull && url && (
        <span class="lightbox" role="dialog" onClick={() => setFull(false)}>
          <img data-testid="full-image" src={url} alt={meta.name} />
        </span>
      )}
    </span>
  );
}

/** The setting of the largest file this user sends or accepts. */
export function FileSizeSetting({ storage }: { storage: Storage }) {
  const [mb, setMb] = useState(() =>
    storage.getItem(MAX_FILE_MB_KEY) ?? String(DEFAULT_MAX_FILE_MB)
  );
  return (
    <label class="setting">
      Largest file (MB){" "}
      <input
        type="number"
        min="1"
        max="1024"
        data-testid="max-file-mb"
        value={mb}
        onChange={(e) => {
          const value = e.currentTarget.value;
          const n = Number(value);
          if (!Number.isFinite(n) || n <= 0) return;
          storage.setItem(MAX_FILE_MB_KEY, String(n));
          setMb(value);
        }}
      />
    </label>
  );
}

/** A thumbnail of an image, at most ~6 KB (JPEG), made with the browser's canvas; or null. */
export async function makeThumbnail(
  bytes: Uint8Array<ArrayBuffer>,
  mime: string,
): Promise<{ bytes: Uint8Array; mime: "image/jpeg" } | null> {
  if (typeof createImageBitmap === "undefined" || typeof OffscreenCanvas === "undefined") {
    return null;
  }
  const bitmap = await createImageBitmap(new Blob([bytes], { type: mime }));
  try {
    for (const [side, quality] of [[160, 0.7], [120, 0.6], [96, 0.5], [64, 0.4]] as const) {
      const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
      const w = Math.max(1, Math.round(bitmap.width * scale));
      const h = Math.max(1, Math.round(bitmap.height * scale));
      const canvas = new OffscreenCanvas(w, h);
      const ctx = canvas.getContext("2d");
      if (!ctx) return null;
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, w, h);
      ctx.drawImage(bitmap, 0, 0, w, h);
      const blob = await canvas.convertToBlob({ type: "image/jpeg", quality });
      if (blob.size <= 6_000) {
        return { bytes: new Uint8Array(await blob.arrayBuffer()), mime: "image/jpeg" };
      }
    }
    return null;
  } finally {
    bitmap.close();
  }
}
