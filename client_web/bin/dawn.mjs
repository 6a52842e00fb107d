// WebGPU under Node, from the npm `webgpu` package (Dawn, on Vulkan), set up the way the trainer's
// wgpu expects to find it in a browser. wgpu checks three things that Node lacks:
//   - Dawn's classes as globals, because it tests `instanceof GPUAdapter` and friends;
//   - `navigator.gpu`, where it asks for the adapter;
//   - a `Window` class, without which it refuses to start outside a page or a worker.

/**
 * Install Dawn as this process's WebGPU and return the adapter's description.
 *
 * Throws when the package is missing or Dawn finds no adapter (no Vulkan driver, or one that
 * lacks what Dawn needs), naming the cause, so a caller can fall back or report it.
 * `flags` are Dawn toggles, for example `["enable-dawn-features=disable_timestamp_query_conversion"]`.
 */
export async function installDawn(flags = []) {
  let dawn;
  try {
    dawn = await import("webgpu");
  } catch (e) {
    throw new Error(`the npm package webgpu (Dawn) is not installed: ${e.message}`);
  }
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create(flags);
  if (globalThis.navigator) {
    Object.defineProperty(globalThis.navigator, "gpu", { value: gpu, configurable: true });
  } else {
    globalThis.navigator = { gpu };
  }
  globalThis.Window ??= class Window {};
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("Dawn found no WebGPU adapter (is a Vulkan driver installed?)");
  const { vendor, architecture, device, description } = adapter.info;
  return [vendor, architecture, device, description].filter(Boolean).join(" ");
}
