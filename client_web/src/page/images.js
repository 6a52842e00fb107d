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
