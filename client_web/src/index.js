export { runClient, trainOptions } from "./client.js";
export * from "./protocol/index.js";
