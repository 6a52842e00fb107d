// The participant's own files, prepared for the run in this browser: a CSV by the run's data
// schema (its columns, statistics and classes, from /api/status), or digit images for the
// MNIST demo runs. Nothing here is uploaded; the page shows what it kept (the first rows, or the first
// pictures as the model will see them) and what it refused.
import { prepareTable } from "../data-schema.js";
import { readLabelledImages, readSchemaImages } from "./images.js";

/** The run's data schema (null when it has none: the MNIST demo) and its model's input shape. */
async function runData() {
  const status = await (await fetch("/api/status")).json();
  return { schema: status.data ?? null, inputShape: status.input_shape };
}

/**
 * @param {File[]} files  what the participant picked
 * @returns {Promise<{data: {x: Float32Array, y: Int32Array|Float32Array}|null, summary: string, preview: HTMLElement|null}>}
 */
export async function readOwnData(files) {
  const { schema, inputShape } = await runData();
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
  if (schema?.kind === "image") {
    const pictures = files.filter((f) => f.type.startsWith("image/") || /\.(png|jpe?g|gif|bmp|webp)$/i.test(f.name));
    const got = await readSchemaImages(pictures, schema, inputShape);
    const refusedNames = got.refused.slice(0, 10).map((r) => `${r.line}: ${r.reason}`);
    const summary = [
      `${got.y.length} pictures ready (${Object.entries(got.counts)
        .map(([c, n]) => `${c}: ${n}`)
        .join(", ")})`,
      got.refused.length
        ? `; refused ${got.refused.length}: ${refusedNames.join("; ")}${got.refused.length > 10 ? "; …" : ""}`
        : "",
    ].join("");
    const preview = previewPictures(got.x, got.y, inputShape, (i) => schema.classes[i]);
    return { data: got.y.length ? { x: got.x, y: got.y } : null, summary, preview };
  }
  if (schema !== null) return refuse("This run trains on a CSV table: pick one.");
  const images = await readLabelledImages(files);
  const skipped = images.skipped.length ? `, skipped ${images.skipped.length} without a 0-9 label prefix` : "";
  return {
    data: images.y.length ? { x: images.x, y: images.y } : null,
    summary: `${images.y.length} images ready${skipped}`,
    preview: previewPictures(images.x, images.y, [1, 28, 28], String),
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

/** The first pictures as the model will see them (resized, greyscale or RGB), each with its class. */
function previewPictures(x, y, [channels, height, width], className, count = 12) {
  const strip = document.createElement("div");
  strip.className = "preview pictures";
  const plane = height * width;
  for (let i = 0; i < Math.min(count, y.length); i++) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(width, height);
    const at = i * channels * plane;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        image.data[4 * p + c] = Math.round(255 * x[at + (channels === 3 ? c : 0) * plane + p]);
      }
      image.data[4 * p + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = className(y[i]);
    figure.append(canvas, caption);
    strip.append(figure);
  }
  return strip;
}
