// Header validation against the JSON Schemas in protocol/schemas (the same files Python uses).

import Ajv2020 from "ajv/dist/2020.js";

import chunk from "../../../protocol/schemas/chunk.schema.json" with { type: "json" };
import dataSchema from "../../../protocol/schemas/data-schema.schema.json" with { type: "json" };
import error from "../../../protocol/schemas/error.schema.json" with { type: "json" };
import evaluate from "../../../protocol/schemas/evaluate.schema.json" with { type: "json" };
import heartbeat from "../../../protocol/schemas/heartbeat.schema.json" with { type: "json" };
import hello from "../../../protocol/schemas/hello.schema.json" with { type: "json" };
import modelSpec from "../../../protocol/schemas/model-spec.schema.json" with { type: "json" };
import result from "../../../protocol/schemas/result.schema.json" with { type: "json" };
import train from "../../../protocol/schemas/train.schema.json" with { type: "json" };
import welcome from "../../../protocol/schemas/welcome.schema.json" with { type: "json" };

import { ErrorCode, ProtocolError, quote } from "./errors.js";

const SCHEMAS = { hello, welcome, train, evaluate, result, error, heartbeat, chunk };
export const MESSAGE_TYPES = Object.freeze(Object.keys(SCHEMAS));

const ajv = new Ajv2020({ allErrors: false, strict: false });
ajv.addSchema(modelSpec);
ajv.addSchema(dataSchema);
const validators = Object.fromEntries(Object.entries(SCHEMAS).map(([k, s]) => [k, ajv.compile(s)]));

export function validateHeader(header) {
  const validate = validators[header.type];
  if (!validate) {
    throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown message type ${quote(header.type)}`);
  }
  if (!validate(header)) {
    const e = validate.errors[0];
    throw new ProtocolError(ErrorCode.INVALID_MESSAGE, `${header.type}: ${e.instancePath || "(header)"} ${e.message}`);
  }
}
