export { Reassembler, splitFrame } from "./chunking.js";
export { ClientProtocol, DEFAULT_MAX_FRAME_BYTES } from "./client-protocol.js";
export { decodeTensors, ENCODINGS, encodeTensors } from "./encodings.js";
export { ErrorCode, ProtocolError } from "./errors.js";
export { decodeFrame, encodeFrame } from "./frame.js";
export { decode, PROTOCOL_VERSIONS, parse } from "./messages.js";
export { FILE_DTYPES, readSafetensors, WIRE_DTYPES, writeSafetensors } from "./safetensors.js";
