/** Export of the whole history to a passphrase-encrypted file, and import of such a file. */
import { useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import {
  DEFAULT_EXPORT_FILE_BYTES,
  exportHistoryBlob,
  HistoryFileError,
  openHistoryFile,
} from "../history_export.ts";

/** Rows imported per step (each step durable, the progress shown between them). */
const IMPORT_STEP = 5_000;

export function HistoryBackup({ model }: { model: ChatModel }) {
  const [passphrase, setPassphrase] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [withFiles, setWithFiles] = useState(true);
  const me = model.me.value;
  if (!me) return null;

  const run = async (work: () => Promise<string>) => {
    setBusy(true);
    try {
      setStatus(await work());
    } catch (err) {
      setStatus(
        err instanceof HistoryFileError ? err.message : `Failed: ${String(err)}. Try again.`,
      );
    } finally {
      setBusy(false);
    }
  };

  const doExport = () =>
    run(async () => {
      setStatus("Encrypting your history…");
      const rows = model.allMessages();
      const files = model.files.value;
      const picked = withFiles && files
        ? await files.exportable(rows, DEFAULT_EXPORT_FILE_BYTES)
        : { files: [], leftOut: 0, leftOutBytes: 0 };
      const blob = await exportHistoryBlob(me, rows, passphrase, {
        files: picked.files,
        onProgress: (done, total) => {
          if (total > 0) {
            setStatus(`Encrypting files… ${mb(done)} of ${mb(total)}`);
          }
        },
      });
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `p2pchat-history-${me}-${new Date().toISOString().slice(0, 10)}.p2pchat`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      const leftOut = picked.leftOut > 0
        ? ` ${plural(picked.leftOut, "file")} (${mb(picked.leftOutBytes)}) left out: an export ` +
          `carries at most ${mb(DEFAULT_EXPORT_FILE_BYTES)} of files; after an import they ` +
          `show as not on the device.`
        : "";
      return `Exported ${rows.length} messages and ${plural(picked.files.length, "file")}.` +
        `${leftOut} Keep the file and its passphrase safe.`;
    });

  const doImport = () =>
    run(async () => {
      if (!file) return "Choose a history file first.";
      setStatus("Decrypting…");
      const { rows, files } = await openHistoryFile(
        new Uint8Array(await file.arrayBuffer()),
        passphrase,
        me,
      );
      // The files first: a message shown before its file is stored would start asking its
      // sender for it.
      const transfers = model.files.value;
      let missing = 0;
      if (transfers) {
        const carried = new Map(files.map((f) => [f.id, f]));
        missing = (await transfers.adopt(rows, carried)).missing;
      }
      let fresh = 0;
      for (let i = 0; i < rows.length; i += IMPORT_STEP) {
        fresh += await model.importHistory(rows.slice(i, i + IMPORT_STEP));
        setStatus(`Imported ${Math.min(i + IMPORT_STEP, rows.length)} of ${rows.length}…`);
      }
      const withFiles = files.length > 0 ? ` and ${plural(files.length, "file")}` : "";
      const notCarried = missing > 0
        ? ` ${plural(missing, "file")} not in the export: ${
          missing === 1 ? "it shows" : "they show"
        } as not on this device.`
        : "";
      return `Imported ${rows.length} messages (${fresh} new)${withFiles}.${notCarried}`;
    });

  return (
    <fieldset class="backup" disabled={busy}>
      <legend>History backup</legend>
      <label class="setting">
        Passphrase
        <input
          type="password"
          data-testid="backup-passphrase"
          autocomplete="new-password"
          value={passphrase}
          onInput={(e) => setPassphrase(e.currentTarget.value)}
        />
      </label>
      <label class="setting">
        <input
          type="checkbox"
          data-testid="export-with-files"
          checked={withFiles}
          onChange={(e) => setWithFiles(e.currentTarget.checked)}
        />{" "}
        With files and images (up to {mb(DEFAULT_EXPORT_FILE_BYTES)})
      </label>
      <button type="button" data-testid="export-history" onClick={() => void doExport()}>
        Export history
      </button>
      <label class="setting">
        History file
        <input
          type="file"
          data-testid="import-file"
          accept=".p2pchat"
          onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)}
        />
      </label>
      <button type="button" data-testid="import-history" onClick={() => void doImport()}>
        Import
      </button>
      {status && <p role="status" data-testid="backup-status">{status}</p>}
    </fieldset>
  );
}

function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
