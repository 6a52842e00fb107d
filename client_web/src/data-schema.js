// SPEC §2.3 in the browser: a participant's table prepared by the run's data schema, as the
// coordinator's Python reader prepares it (protocol/vectors/data-tables.json holds both to the
// same bytes). The page skips and lists the rows it cannot use, where the CLI refuses the file:
// a person picking a spreadsheet should train on the good rows and see what was left out.
import Papa from "papaparse";

/** A number as a table cell writes it (coordinator/data/schema.py uses the same pattern). */
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** A label's class name: `1`, `1.0` and `"1"` are all class "1". */
export function labelName(value) {
  const text = String(value).trim();
  if (!NUMBER.test(text)) return text;
  const n = Number(text);
  return Number.isInteger(n) ? BigInt(n).toString() : String(n);
}

const quote = (s) => `'${String(s).replaceAll("'", "\\'")}'`;

/**
 * @param {string} text  the CSV file's text (its first line names the columns)
 * @param {{kind: "table", features: string[], mean: number[], std: number[], label: string, classes?: string[]}} schema
 * @param {string} [name]  the file's name, for errors
 * @returns {{x: Float32Array, y: Int32Array|Float32Array, rows: number, refused: {line: number, reason: string}[],
 *   counts: Record<string, number>|null, header: string[], preview: string[][]}}
 *   `x` is `[rows, features]`, standardised; `y` class indices, or float targets for a regression.
 * @throws Error when the file cannot be a table of this schema at all (no header, a column missing)
 */
export function prepareTable(text, schema, name = "table") {
  if (schema?.kind !== "table") throw new Error(`${name}: this run's data is not a table`);
  const { data } = Papa.parse(text, { skipEmptyLines: "greedy" });
  if (data.length < 2) throw new Error(`${name}: no rows under the header`);
  const header = data[0].map((h) => h.trim());
  const where = (column) => {
    const at = header.indexOf(column);
    if (at < 0)
      throw new Error(`${name}: no column ${quote(column)} (it has ${header.slice(0, 10).map(quote).join(", ")})`);
    return at;
  };
  const columns = schema.features.map(where);
  const labelAt = where(schema.label);
  const classes = schema.classes ? new Map(schema.classes.map((c, i) => [c, i])) : null;
  const width = columns.length;
  const x = new Float32Array((data.length - 1) * width);
  const y = classes ? new Int32Array(data.length - 1) : new Float32Array(data.length - 1);
  const refused = [];
  let rows = 0;
  for (let r = 1; r < data.length; r++) {
    const reason = prepareRow(data[r], header.length, schema, columns, labelAt, classes, x, y, rows);
    if (reason === null) rows++;
    else refused.push({ line: r + 1, reason });
  }
  const counts = classes ? Object.fromEntries(schema.classes.map((c) => [c, 0])) : null;
  if (counts) for (const i of y.subarray(0, rows)) counts[schema.classes[i]]++;
  return {
    x: x.slice(0, rows * width),
    y: y.slice(0, rows),
    rows,
    refused,
    counts,
    header,
    preview: data.slice(1, 6),
  };
}

/** Writes row `cells` at index `at` of x and y; returns null, or why the row cannot be used. */
function prepareRow(cells, expected, schema, columns, labelAt, classes, x, y, at) {
  if (cells.length !== expected) return `${cells.length} cells, the header ${expected}`;
  for (const [j, c] of columns.entries()) {
    const text = cells[c].trim();
    if (text === "") return `column ${quote(schema.features[j])} has no value`;
    if (!NUMBER.test(text)) return `column ${quote(schema.features[j])} holds ${quote(text)}, not a number`;
    const value = Number(text);
    if (!Number.isFinite(value)) return `column ${quote(schema.features[j])} holds ${text}, not finite`;
    x[at * columns.length + j] = (value - schema.mean[j]) / schema.std[j];
  }
  const label = cells[labelAt].trim();
  if (classes === null) {
    if (!NUMBER.test(label)) return `target ${quote(label)} in column ${quote(schema.label)} is not a number`;
    y[at] = Number(label);
    return null;
  }
  const index = classes.get(labelName(label));
  if (index === undefined)
    return `label ${quote(label)} in column ${quote(schema.label)} is not one of the run's classes`;
  y[at] = index;
  return null;
}
