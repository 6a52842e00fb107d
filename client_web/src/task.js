// One task's work, apart from the connection: a train or evaluate task in (as
// ClientProtocol reports it), its reply out (a result, or a training_failed error),
// for ClientProtocol.send(). Runs anywhere a trainer does; the tests use a fake one.

import { ErrorCode } from "./protocol/errors.js";

/** Protocol config keys (SPEC §5) → the trainer's TrainOptions. */
const TRAIN_OPTIONS = {
  "local-epochs": "epochs",
  "batch-size": "batchSize",
  "memory-budget-mb": "memoryBudgetMb",
  lr: "lr",
  optimizer: "optimizer",
  momentum: "momentum",
  "weight-decay": "weightDecay",
  "proximal-mu": "proximalMu",
  seed: "seed",
  nesterov: "nesterov",
  "lr-schedule": "lrSchedule",
  "lr-step-size": "lrStepSize",
  "lr-gamma": "lrGamma",
  "lr-warmup-steps": "lrWarmupSteps",
  "grad-clip-norm": "gradClipNorm",
  precision: "precision",
  "augment-crop": "augmentCrop",
  "augment-flip": "augmentFlip",
  "augment-rotate": "augmentRotate",
  "augment-brightness": "augmentBrightness",
  "augment-contrast": "augmentContrast",
  "augment-mixup": "augmentMixup",
};

/** The trainer's TrainOptions for a task's config; keys the config lacks are left out. */
export function trainOptions(config) {
  const o = {};
  for (const [wire, key] of Object.entries(TRAIN_OPTIONS)) if (config[wire] !== undefined) o[key] = config[wire];
  return o;
}

/** How often a training job yields to the event loop (WASM training is synchronous). */
const PAUSE_EVERY_MS = 50;

/** How often a kept job (see `jobs`) is checkpointed while it trains. */
export const CHECKPOINT_EVERY_SECONDS = 2;

export class TaskWorker {
  /**
   * @param {object} o
   * @param {(spec: object) => Promise<object>} o.createTrainer  a Trainer for a model spec; one per spec, kept
   * @param {(need: {schema: object|null, model: object}) => Promise<{x: Float32Array, y: Int32Array}>} o.data
   *   the local data, prepared as the task's data schema says (SPEC §2.3; null: as the client holds it);
   *   asked for once per schema (again after a failure)
   * @param {() => string} [o.updateEncoding]  the encoding the coordinator asked deltas in (SPEC §2.1)
   * @param {(event: object) => void} [o.onEvent]  task, batch, checkpoint, trained, evaluated, task-failed
   * @param {{save: (job: object) => Promise<void>, checkpoint: (taskId: string, blob: Uint8Array) => Promise<void>}|null} [o.jobs]
   *   where a train job is kept while it runs: the task and its data when it starts, then its trainer's
   *   checkpoints, so that a later worker can `answer(job.task with job.examples, job.checkpoint)`
   */
  constructor({ createTrainer, data, updateEncoding, onEvent, jobs }) {
    this.createTrainer = createTrainer;
    this.loadData = data;
    this.updateEncoding = updateEncoding ?? (() => "fp32");
    this.emit = onEvent ?? (() => {});
    this.jobs = jobs ?? null;
    this.trainers = new Map();
    this.data = null;
    this.dataSchema = undefined; // the schema `data` was prepared by (JSON), so a new run's is asked for anew
  }

  /**
   * @param {{kind: "train"|"evaluate", taskId: string, round: number, model: object, config: object, weights: Uint8Array,
   *   examples?: {x: Float32Array, y: Int32Array}}} task  `examples`: a kept job's data, instead of the provider's
   * @param {Uint8Array} [resume]  a checkpoint of this same job, to go on from
   * @returns {Promise<object>} {type: "result", replyTo, numExamples, metrics, delta?} or {type: "error", code, message, replyTo}
   */
  async answer(task, resume) {
    this.emit({ type: "task", kind: task.kind, round: task.round });
    try {
      return await this.run(task, resume);
    } catch (e) {
      const message = String(e?.message ?? e);
      this.emit({ type: "task-failed", round: task.round, message });
      return { type: "error", code: ErrorCode.TRAINING_FAILED, message, replyTo: task.taskId };
    }
  }

  /** The trainer for a model spec, created on first use. */
  async trainer(spec) {
    const key = JSON.stringify(spec);
    if (!this.trainers.has(key)) this.trainers.set(key, await this.createTrainer(spec));
    return this.trainers.get(key);
  }

  async examples(task) {
    if (task.examples) return task.examples;
    const schema = JSON.stringify(task.data ?? null);
    if (this.data === null || schema !== this.dataSchema) {
      this.data = null;
      this.data = await this.loadData({ schema: task.data ?? null, model: task.model });
      this.dataSchema = schema;
    }
    return this.data;
  }

  async run(task, resume) {
    const started = Date.now();
    const { x, y } = await this.examples(task);
    const trainer = await this.trainer(task.model);
    trainer.loadWeights(task.weights);
    const reply = { type: "result", replyTo: task.taskId, numExamples: y.length };
    if (task.kind === "evaluate") {
      const r = await trainer.evaluate(x, y);
      this.emit({ type: "evaluated", round: task.round, ...r });
      // A regression has no accuracy (null): only its loss is reported.
      const metrics = r.accuracy === null ? { loss: r.loss } : { loss: r.loss, accuracy: r.accuracy };
      return { ...reply, metrics };
    }
    let lastPause = Date.now();
    const onBatch = (epoch, batch, batches, loss) => {
      this.emit({ type: "batch", round: task.round, epoch, batch, batches, loss });
      // Pause now and then so heartbeats and the UI keep running.
      if (Date.now() - lastPause > PAUSE_EVERY_MS) {
        lastPause = Date.now();
        return new Promise((r) => setTimeout(r, 0));
      }
    };
    const report = await trainer.train(x, y, trainOptions(task.config), onBatch, await this.keep(task, x, y, resume));
    // Client-side DP (SPEC §5): clip the delta to clipping_norm; the coordinator adds the noise.
    const d = await trainer.delta(task.config.clipping_norm ?? undefined, undefined, this.updateEncoding());
    const metrics = { train_loss: report.loss, train_seconds: (Date.now() - started) / 1000 };
    if (d.clipped !== undefined) metrics.norm_bit = d.clipped ? 1 : 0;
    // `precision` is what ran: an fp16 task on a device without f16 arithmetic trains in fp32.
    this.emit({
      type: "trained",
      round: task.round,
      loss: report.loss,
      seconds: metrics.train_seconds,
      precision: report.precision,
    });
    return { ...reply, metrics, delta: d.delta };
  }

  /** Keep a train job (when there is a store) and say how its trainer checkpoints it into the store. */
  async keep(task, x, y, resume) {
    if (this.jobs === null) return resume ? { resume } : undefined;
    const { examples: _, ...kept } = task;
    await this.jobs.save({ taskId: task.taskId, task: kept, examples: { x, y }, checkpoint: resume ?? null });
    const save = async (blob) => {
      await this.jobs.checkpoint(task.taskId, blob);
      this.emit({ type: "checkpoint", round: task.round, bytes: blob.length });
    };
    return { resume, everySeconds: CHECKPOINT_EVERY_SECONDS, save };
  }
}
