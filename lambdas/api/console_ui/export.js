// Downloads built in the page: the API answers an export in parts (each under Lambda's
// response limit, X-Next-Cursor naming the next), the page joins them into one file.

import { h } from "./dom.js";

/** Fetch every part of an export; returns the parts' texts in order. */
export async function fetchParts(api, path, query, onProgress) {
  const parts = [];
  let cursor = null;
  do {
    const { text, next } = await api.download(path, { query: { ...query, cursor } });
    parts.push(text);
    cursor = next;
    if (onProgress) onProgress(parts.length);
  } while (cursor);
  return parts;
}

/** Offer a file to the browser's download (a blob: URL, never data from the network). */
export function saveFile(name, type, parts) {
  const url = URL.createObjectURL(new Blob(parts, { type }));
  const link = h("a", { href: url, download: name, className: "visually-hidden" }, name);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

/** JSON parts are arrays: one array of everything. */
export function joinJsonArrays(parts) {
  return JSON.stringify(parts.flatMap((part) => JSON.parse(part)), null, 1);
}
