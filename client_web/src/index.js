export { runClient } from "./client.js";
export * from "./protocol/index.js";
export { TaskWorker, trainOptions } from "./task.js";
