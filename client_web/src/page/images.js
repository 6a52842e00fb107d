// A person's own labelled images, turned into model inputs in the browser (they are never uploaded).
// File names carry the label: "7_anything.png" is a 7.

/** @returns {Promise<{x: Float32Array, y: Int32Array, skipped: string[]}>} 28×28 grayscale in 0..1. */
export async function readLabelledImages(files, size = 28) {
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const xs = [];
  const ys = [];
  const skipped = [];
  for (const file of files) {
    const label = Number.parseInt(file.name.split(/[_\-. ]/)[0], 10);
    if (!Number.isInteger(label) || label < 0 || label > 9) {
      skipped.push(file.name);
      continue;
    }
    const bitmap = await createImageBitmap(file);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size, size);
    ctx.drawImage(bitmap, 0, 0, size, size);
    const { data } = ctx.getImageData(0, 0, size, size);
    const pixels = new Float32Array(size * size);
    // MNIST digits are light strokes on black: invert ordinary dark-on-light images.
    for (let i = 0; i < pixels.length; i++) {
      pixels[i] = 1 - (data[4 * i] + data[4 * i + 1] + data[4 * i + 2]) / (3 * 255);
    }
    xs.push(pixels);
    ys.push(label);
  }
  const x = new Float32Array(xs.length * size * size);
  for (const [i, p] of xs.entries()) x.set(p, i * size * size);
  return { x, y: Int32Array.from(ys), skipped };
}

/** A picture's class: its folder's name (a picked folder), else its file name up to `_`, `-`, `.` or a space. */
export function imageLabel(file) {
  const parts = (file.webkitRelativePath || "").split("/");
  return parts.length >= 2 ? parts.at(-2) : file.name.split(/[_\-. ]/)[0];
}

/**
 * Pictures prepared by an image run's schema (SPEC §2.3): greyscale (ITU-R 601 luma, as Pillow's "L")
 * or RGB, resized to the model's H × W, each value its 8-bit intensity / 255, labelled by class name.
 * @param {File[]} files
 * @param {{classes: string[]}} schema
 * @param {number[]} inputShape  [C, H, W]
 * @returns {Promise<{x: Float32Array, y: Int32Array, refused: {line: string, reason: string}[], counts: Record<string, number>}>}
 */
export async function readSchemaImages(files, schema, inputShape) {
  const [channels, height, width] = inputShape;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const classes = new Map(schema.classes.map((c, i) => [c, i]));
  const counts = Object.fromEntries(schema.classes.map((c) => [c, 0]));
  const size = channels * height * width;
  const xs = [];
  const ys = [];
  const refused = [];
  for (const file of files) {
    const label = classes.get(imageLabel(file));
    if (label === undefined) {
      refused.push({ line: file.name, reason: `class ${JSON.stringify(imageLabel(file))} is not one of the run's` });
      continue;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      refused.push({ line: file.name, reason: "not a readable picture" });
      continue;
    }
    ctx.clearRect(0, 0, width, height);
    ctx.drawImage(bitmap, 0, 0, width, height);
    const { data } = ctx.getImageData(0, 0, width, height);
    const pixels = new Float32Array(size);
    for (let i = 0; i < height * width; i++) {
      const [r, g, b] = [data[4 * i], data[4 * i + 1], data[4 * i + 2]];
      if (channels === 1) pixels[i] = Math.round((r * 299 + g * 587 + b * 114) / 1000) / 255;
      else for (const [c, v] of [r, g, b].entries()) pixels[c * height * width + i] = v / 255;
    }
    xs.push(pixels);
    ys.push(label);
    counts[schema.classes[label]]++;
  }
  const x = new Float32Array(xs.length * size);
  for (const [i, p] of xs.entries()) x.set(p, i * size);
  return { x, y: Int32Array.from(ys), refused, counts };
}
