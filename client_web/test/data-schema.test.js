// The page's table reader against the shared vectors: the same model input and labels as the
// coordinator's reader, byte for byte, and the same lines refused.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { labelName, prepareTable } from "../src/data-schema.js";

const vectors = JSON.parse(readFileSync(new URL("../../protocol/vectors/data-tables.json", import.meta.url)));

for (const v of vectors.valid) {
  test(`table vector ${v.name} prepares as the coordinator does`, () => {
    const got = prepareTable(v.csv, v.schema, `${v.name}.csv`);
    assert.deepEqual(got.refused, []);
    assert.deepEqual(Array.from(got.x), v.x);
    assert.deepEqual(Array.from(got.y), v.y);
    assert.equal(got.y instanceof Int32Array, v.schema.classes !== undefined);
  });
}

for (const v of vectors.refused) {
  test(`table vector ${v.name}: line ${v.line} is refused and the rest kept`, () => {
    const got = prepareTable(v.csv, v.schema, `${v.name}.csv`);
    assert.deepEqual(
      got.refused.map((r) => r.line),
      [v.line],
    );
    assert.equal(got.rows, v.csv.trim().split("\n").length - 2);
    assert.equal(got.x.length, got.rows * v.schema.features.length);
  });
}

test("labels are named as numbers when they are numbers", () => {
  assert.deepEqual(["1", "1.0", " 1 ", "+1e0", "a", "1.50", "1_000"].map(labelName), [
    "1",
    "1",
    "1",
    "1",
    "a",
    "1.5",
    "1_000",
  ]);
});

test("a table without a schema column, or not a table run, is refused whole", () => {
  const schema = vectors.valid[0].schema;
  assert.throws(() => prepareTable("age,diagnosis\n1,benign\n", schema, "x.csv"), /x\.csv: no column 'mean radius'/);
  assert.throws(() => prepareTable("a\n1\n", { kind: "image", classes: ["a", "b"] }, "x.csv"), /not a table/);
  assert.throws(() => prepareTable("age,mean radius,diagnosis\n", schema, "x.csv"), /no rows under the header/);
});

test("per-class counts and a preview come with the prepared rows", () => {
  const got = prepareTable(vectors.valid[1].csv, vectors.valid[1].schema);
  assert.deepEqual(got.counts, { 0: 1, 1: 2, 2: 1 });
  assert.equal(got.preview.length, 4);
});
