// The participant's own files, prepared for the run in this browser: a CSV by the run's data
// schema (its columns, statistics and classes, from /api/status), or digit images for the
// MNIST demo runs. Nothing here is uploaded; the page shows what it kept and what it refused.
import { prepareTable } from "../data-schema.js";
import { readLabelledImages } from "./images.js";

/** The run's data schema, or null when it has none (the MNIST demo). */
async function runSchema() {
  const status = await (await fetch("/api/status")).json();
  return status.data ?? null;
}

/**
 * @param {File[]} files  what the participant picked
 * @returns {Promise<{data: {x: Float32Array, y: Int32Array|Float32Array}|null, summary: string, preview: HTMLElement|null}>}
 */
export async function readOwnData(files) {
  const schema = await runSchema();
  const tables = files.filter((f) => f.name.toLowerCase().endsWith(".csv"));
  if (tables.length) {
    if (schema?.kind !== "table") return refuse("This run does not train on tables: pick images instead.");
    if (tables.length > 1) return refuse("Pick one CSV file.");
    const t = prepareTable(await tables[0].text(), schema, tables[0].name);
    const refusedLines = t.refused.slice(0, 10).map((r) => `line ${r.line}: ${r.reason}`);
    const summary = [
      `${tables[0].name}: ${t.rows} rows ready`,
      t.counts
        ? ` (${Object.entries(t.counts)
            .map(([c, n]) => `${c}: ${n}`)
            .join(", ")})`
        : "",
      t.refused.length
        ? `; refused ${t.refused.length}: ${refusedLines.join("; ")}${t.refused.length > 10 ? "; …" : ""}`
        : "",
    ].join("");
    return { data: t.rows ? { x: t.x, y: t.y } : null, summary, preview: previewTable(t.header, t.preview) };
  }
  if (schema !== null)
    return refuse(
      `This run trains on ${schema.kind === "table" ? "a CSV table" : "its own kind of data"}: pick a CSV.`,
    );
  const images = await readLabelledImages(files);
  const skipped = images.skipped.length ? `, skipped ${images.skipped.length} without a 0-9 label prefix` : "";
  return {
    data: images.y.length ? { x: images.x, y: images.y } : null,
    summary: `${images.y.length} images ready${skipped}`,
    preview: null,
  };
}

function refuse(summary) {
  return { data: null, summary, preview: null };
}

/** The file's first rows as they are in it, so a participant can see which columns are which. */
function previewTable(header, rows) {
  const table = document.createElement("table");
  table.className = "preview";
  const head = table.createTHead().insertRow();
  for (const h of header) head.insertCell().textContent = h;
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) tr.insertCell().textContent = cell;
  }
  return table;
}
