// The bounds every decoder enforces on what a peer sends (SPEC §1.1), and the bounded JSON reader.
// The same numbers as coordinator/protocol/limits.py; the shared vectors hold both to them.

import { ErrorCode, ProtocolError, quote } from "./errors.js";

export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_ERROR_MESSAGE_CHARS = 1024;
export const HEADER_LIMITS = Object.freeze({
  maxStringChars: 4096,
  maxKeyChars: 256,
  maxArrayItems: 1024,
  maxObjectKeys: 256,
  maxDepth: 16,
});

// Tokens outside strings: JSON.parse has already checked the grammar, this only looks at
// integer literals (which JSON.parse would round) and at nesting.
const TOKENS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[[{]|[\]}]/g;
const INTEGER = /^-?\d+$/;

const invalid = (message) => new ProtocolError(ErrorCode.INVALID_MESSAGE, message);

/** Length in code points, as JSON Schema and Python count it; cheap unless the string is long. */
const charCount = (s, limit) => (s.length <= limit ? s.length : [...s].length);

function scanTokens(text, limits) {
  let depth = 0;
  for (const [token] of text.matchAll(TOKENS)) {
    const c = token[0];
    if (c === "[" || c === "{") {
      if (++depth > limits.maxDepth) throw invalid(`JSON nested deeper than ${limits.maxDepth} levels`);
    } else if (c === "]" || c === "}") {
      depth--;
    } else if (c !== '"' && INTEGER.test(token)) {
      const digits = token.replace("-", "");
      if (digits.length > 16 || !Number.isSafeInteger(Number(token))) {
        throw invalid(`integer ${quote(token)} is outside ±(2^53 − 1)`);
      }
    }
  }
}

function checkShape(value, limits) {
  const stack = [value];
  while (stack.length) {
    const node = stack.pop();
    if (typeof node === "string") {
      if (charCount(node, limits.maxStringChars) > limits.maxStringChars) {
        throw invalid(`a string of ${[...node].length} characters exceeds ${limits.maxStringChars}`);
      }
    } else if (typeof node === "number") {
      if (!Number.isFinite(node)) throw invalid("a number does not fit a finite double");
      // Every double this large is whole, and the canonical form (RFC 8785, as JSON.stringify)
      // writes it as an integer literal, which scanTokens refuses: it could not be sent on.
      if (Math.abs(node) > Number.MAX_SAFE_INTEGER && Math.abs(node) < 1e21) {
        throw invalid(`number ${node} is a whole number outside ±(2^53 − 1)`);
      }
    } else if (Array.isArray(node)) {
      if (node.length > limits.maxArrayItems) {
        throw invalid(`an array of ${node.length} items exceeds ${limits.maxArrayItems}`);
      }
      stack.push(...node);
    } else if (node !== null && typeof node === "object") {
      const keys = Object.keys(node);
      if (keys.length > limits.maxObjectKeys) {
        throw invalid(`an object of ${keys.length} keys exceeds ${limits.maxObjectKeys}`);
      }
      for (const key of keys) {
        if (charCount(key, limits.maxKeyChars) > limits.maxKeyChars) {
          throw invalid(`key ${quote(key)} is longer than ${limits.maxKeyChars} characters`);
        }
        stack.push(node[key]);
      }
    }
  }
}

/**
 * Parse JSON within `limits`: text that is not JSON raises ProtocolError(bad_frame), a
 * breach of a limit ProtocolError(invalid_message). Integers must lie within ±(2^53 − 1)
 * and every number must be a finite double.
 */
export function loadJson(text, limits = HEADER_LIMITS) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `not JSON: ${e.message.slice(0, 120)}`);
  }
  scanTokens(text, limits);
  checkShape(value, limits);
  return value;
}
