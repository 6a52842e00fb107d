//! Tensor encodings on the wire (SPEC §2.1): fp32, fp16, and int8 with one float32 scale per
//! chunk of 256 values. Byte for byte what the Python and JS codecs write; all three pass the
//! shared `protocol/vectors/encodings.json`.
//!
//! Every step is float32 arithmetic in the order the spec gives, so a level never depends on
//! the platform. Deltas round stochastically (unbiased: the errors of many clients average
//! out instead of adding up); weights round to nearest, ties to even.

use half::f16;
use rand::RngExt;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{Result, TrainerError};
use crate::privacy;
use crate::spec::WireTensor;
use crate::weights::Named;

pub const CHUNK: usize = 256;
pub const SCALES_SUFFIX: &str = ":scales";
const FP16_MAX: f32 = 65504.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Fp32,
    Fp16,
    Int8,
}

impl Encoding {
    /// The encoding named by the protocol (`"fp32"`, `"fp16"`, `"int8"`).
    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| {
            TrainerError::Config(format!("unknown encoding {name:?}: fp32, fp16 or int8"))
        })
    }
}

/// Binary16 bits of `v`, nearest, ties to even; an error past ±65504 or for a value not finite.
pub fn to_half_bits(v: f32) -> Result<u16> {
    if !v.is_finite() || v.abs() > FP16_MAX {
        return Err(TrainerError::Weights(format!(
            "{v} is not finite or beyond float16's ±65504"
        )));
    }
    Ok(f16::from_f32(v).to_bits())
}

/// `(levels, scales)`. `uniforms` (one per value, in [0, 1)) round stochastically; `None`
/// rounds to nearest. An error for a value that is not finite.
pub fn quantize_int8(x: &[f32], uniforms: Option<&[f32]>) -> Result<(Vec<i8>, Vec<f32>)> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(TrainerError::Weights(format!("value {i} is not finite")));
    }
    let scales: Vec<f32> = x
        .chunks(CHUNK)
        .map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0)
        .collect();
    let levels = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[i / CHUNK];
            let r = if s == 0.0 { 0.0 } else { v / s };
            let level = match uniforms {
                None => r.round_ties_even(),
                Some(u) => (r + u[i]).floor(),
            };
            level.clamp(-127.0, 127.0) as i8
        })
        .collect();
    Ok((levels, scales))
}

/// `float32(q_i) × scales[i / 256]`.
pub fn dequantize_int8(q: &[i8], scales: &[f32]) -> Vec<f32> {
    q.iter()
        .enumerate()
        .map(|(i, &l)| f32::from(l) * scales[i / CHUNK])
        .collect()
}

/// Safetensors of `named` in `encoding`, shapes (and which names) from `tensors`. int8 draws
/// its rounding from a generator seeded with OS entropy.
pub fn encode(named: &Named, tensors: &[WireTensor], encoding: Encoding) -> Result<Vec<u8>> {
    let mut rng = match encoding {
        Encoding::Int8 => Some(privacy::seeded_rng()?),
        _ => None,
    };
    encode_with(named, tensors, encoding, |n| {
        let rng = rng.as_mut().expect("int8 has a generator");
        Some((0..n).map(|_| rng.random::<f32>()).collect())
    })
}

/// `encode` with the int8 rounding given, tensor by tensor in `tensors`' order: `uniforms(n)`
/// returns n uniforms for stochastic rounding, or `None` for nearest (the shared vectors).
pub fn encode_with(
    named: &Named,
    tensors: &[WireTensor],
    encoding: Encoding,
    mut uniforms: impl FnMut(usize) -> Option<Vec<f32>>,
) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in tensors.iter().filter(|t| named.contains_key(&t.name)) {
        let values = &named[&t.name];
        let at = |e: TrainerError| match e {
            TrainerError::Weights(m) => TrainerError::Weights(format!("{}: {m}", t.name)),
            other => other,
        };
        match encoding {
            Encoding::Fp32 => {
                entries.push((t.name.clone(), Dtype::F32, t.shape.clone(), le(values)))
            }
            Encoding::Fp16 => {
                let bits = values
                    .iter()
                    .map(|&v| to_half_bits(v))
                    .collect::<Result<Vec<_>>>()
                    .map_err(at)?;
                let data = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
                entries.push((t.name.clone(), Dtype::F16, t.shape.clone(), data));
            }
            Encoding::Int8 => {
                let u = uniforms(values.len());
                let (q, scales) = quantize_int8(values, u.as_deref()).map_err(at)?;
                let data = q.iter().map(|&l| l as u8).collect();
                entries.push((t.name.clone(), Dtype::I8, t.shape.clone(), data));
                let name = format!("{}{SCALES_SUFFIX}", t.name);
                entries.push((name, Dtype::F32, vec![scales.len()], le(&scales)));
            }
        }
    }
    let views = entries
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| TrainerError::Weights(e.to_string()))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| TrainerError::Weights(e.to_string()))
}

/// Parse a payload in any mix of encodings: names and shapes are checked against `expected`
/// before anything is widened; the values come back as float32, not yet checked for finiteness.
pub fn decode(bytes: &[u8], expected: &[WireTensor]) -> Result<Named> {
    let bad = TrainerError::Weights;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !n.ends_with(SCALES_SUFFIX))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut wanted: Vec<String> = expected.iter().map(|t| t.name.clone()).collect();
    wanted.sort();
    if names != wanted {
        return Err(bad(format!("tensor names {names:?}, expected {wanted:?}")));
    }
    for name in st.names() {
        if let Some(of) = name.strip_suffix(SCALES_SUFFIX)
            && st.tensor(of).ok().map(|v| v.dtype()) != Some(Dtype::I8)
        {
            return Err(bad(format!("{name}: scales without an int8 tensor {of}")));
        }
    }
    let mut out = Named::new();
    for t in expected {
        let view = st.tensor(&t.name).map_err(|e| bad(e.to_string()))?;
        if view.shape() != t.shape.as_slice() {
            return Err(bad(format!(
                "{}: shape {:?}, expected {:?}",
                t.name,
                view.shape(),
                t.shape
            )));
        }
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => f32s(data),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            Dtype::I8 => widen_int8(&st, &t.name, data)?,
            other => {
                return Err(bad(format!(
                    "{}: dtype {other:?}, expected F32, F16 or I8",
                    t.name
                )));
            }
        };
        out.insert(t.name.clone(), values);
    }
    Ok(out)
}

fn widen_int8(st: &SafeTensors<'_>, name: &str, data: &[u8]) -> Result<Vec<f32>> {
    let bad = TrainerError::Weights;
    let n = data.len().div_ceil(CHUNK);
    let scales = st
        .tensor(&format!("{name}{SCALES_SUFFIX}"))
        .ok()
        .filter(|s| s.dtype() == Dtype::F32 && s.shape() == [n])
        .map(|s| f32s(s.data()))
        .ok_or_else(|| {
            bad(format!(
                "{name}: an int8 tensor needs {name}{SCALES_SUFFIX}, float32 of shape [{n}]"
            ))
        })?;
    if scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(bad(format!(
            "{name}: scales must be finite and not negative"
        )));
    }
    let q: Vec<i8> = data.iter().map(|&b| b as i8).collect();
    if q.contains(&i8::MIN) {
        return Err(bad(format!(
            "{name}: int8 level -128 is outside the symmetric range ±127"
        )));
    }
    Ok(dequantize_int8(&q, &scales))
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../protocol/vectors/encodings.json")).unwrap()
    }

    fn bytes(hex: &Value) -> Vec<u8> {
        let hex = hex.as_str().unwrap();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(values: &[f32]) -> String {
        le(values).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn wire(tensors: &Value) -> Vec<WireTensor> {
        let mut out: Vec<WireTensor> = tensors
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, t)| WireTensor {
                name: name.clone(),
                shape: serde_json::from_value(t["shape"].clone()).unwrap(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[test]
    fn encoding_vectors_are_written_and_read_byte_for_byte() {
        for case in vectors()["encode"].as_array().unwrap() {
            let tensors = wire(&case["tensors"]);
            let named: Named = tensors
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        f32s(&bytes(&case["tensors"][&t.name]["values_hex"])),
                    )
                })
                .collect();
            let encoding = Encoding::parse(case["encoding"].as_str().unwrap()).unwrap();
            let mut given = tensors.iter().map(|t| {
                let u = case.get("uniforms_hex").map(|u| f32s(&bytes(&u[&t.name])));
                assert!(u.as_ref().is_none_or(|u| u.len() == named[&t.name].len()));
                u
            });
            let payload = encode_with(&named, &tensors, encoding, |_| given.next().unwrap());
            let payload: String = payload
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                payload,
                case["payload_hex"].as_str().unwrap(),
                "{}",
                case["name"]
            );
            let decoded = decode(&bytes(&case["payload_hex"]), &tensors).unwrap();
            for t in &tensors {
                assert_eq!(
                    hex(&decoded[&t.name]),
                    case["decoded_hex"][&t.name],
                    "{}",
                    case["name"]
                );
            }
        }
    }

    #[test]
    fn unencodable_vectors_are_refused_by_the_sender() {
        for case in vectors()["unencodable"].as_array().unwrap() {
            let values = f32s(&bytes(&case["values_hex"]));
            let tensors = vec![WireTensor {
                name: "w".into(),
                shape: vec![values.len()],
            }];
            let named: Named = [("w".to_string(), values)].into_iter().collect();
            let encoding = Encoding::parse(case["encoding"].as_str().unwrap()).unwrap();
            assert!(
                encode(&named, &tensors, encoding).is_err(),
                "{}",
                case["name"]
            );
        }
    }

    #[test]
    fn refused_vectors_are_refused_by_the_receiver() {
        for case in vectors()["refused"].as_array().unwrap() {
            let payload = bytes(&case["payload_hex"]);
            let st = SafeTensors::deserialize(&payload).unwrap();
            let expected: Vec<WireTensor> = st
                .names()
                .into_iter()
                .filter(|n| !n.ends_with(SCALES_SUFFIX))
                .map(|n| WireTensor {
                    name: n.to_string(),
                    shape: st.tensor(n).unwrap().shape().to_vec(),
                })
                .collect();
            assert!(decode(&payload, &expected).is_err(), "{}", case["name"]);
        }
    }

    #[test]
    fn a_wrong_shape_is_refused_before_widening() {
        let named: Named = [("w".to_string(), vec![0.5; 300])].into_iter().collect();
        let tensors = vec![WireTensor {
            name: "w".into(),
            shape: vec![300],
        }];
        let payload = encode(&named, &tensors, Encoding::Int8).unwrap();
        let wrong = vec![WireTensor {
            name: "w".into(),
            shape: vec![301],
        }];
        let err = decode(&payload, &wrong).unwrap_err().to_string();
        assert!(err.contains("w: shape [300], expected [301]"), "{err}");
    }
}
