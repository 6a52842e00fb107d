//! Named tensors in PyTorch's names and layouts: safetensors in and out, into and out of the
//! Burn model (through `params`' table), and the arithmetic on them (delta, norm).

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::params;
use crate::spec::ModelSpec;

/// Flat f32 values per wire name, in the spec's order.
pub type Named = BTreeMap<String, Vec<f32>>;

/// Parse safetensors bytes and check names, dtypes, shapes and finiteness against the spec.
pub fn decode(bytes: &[u8], spec: &ModelSpec) -> Result<Named> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| TrainerError::Weights(format!("not safetensors: {e}")))?;
    let expected = spec.wire_tensors()?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut wanted: Vec<String> = expected.iter().map(|t| t.name.clone()).collect();
    wanted.sort();
    if names != wanted {
        return Err(TrainerError::Weights(format!(
            "tensor names {names:?}, expected {wanted:?}"
        )));
    }
    let mut out = Named::new();
    for t in expected {
        let view = st
            .tensor(&t.name)
            .map_err(|e| TrainerError::Weights(e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(TrainerError::Weights(format!(
                "{}: dtype {:?}, expected F32",
                t.name,
                view.dtype()
            )));
        }
        if view.shape() != t.shape.as_slice() {
            return Err(TrainerError::Weights(format!(
                "{}: shape {:?}, expected {:?}",
                t.name,
                view.shape(),
                t.shape
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(TrainerError::Weights(format!(
                "{}: contains NaN or infinity",
                t.name
            )));
        }
        out.insert(t.name, values);
    }
    Ok(out)
}

/// Serialise named tensors as safetensors, shapes from the spec; names absent from `named` are left out.
pub fn encode(named: &Named, spec: &ModelSpec) -> Result<Vec<u8>> {
    let shapes = spec.wire_tensors()?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .filter(|t| named.contains_key(&t.name))
        .map(|t| {
            let data = named[&t.name]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (t.name, t.shape, data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map_err(|e| TrainerError::Weights(e.to_string()))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|e| TrainerError::Weights(e.to_string()))
}

/// Replace the model's parameters with the named (PyTorch-layout) tensors.
pub fn load<B: Backend>(mut model: Model<B>, named: &Named, device: &B::Device) -> Model<B> {
    for (name, slot) in params::slots(&mut model) {
        slot.set(
            named.get(&name).expect("validated against the spec"),
            device,
        );
    }
    model
}

/// Read every wire tensor back in PyTorch layout. Async, because WebGPU reads must be.
pub async fn read<B: Backend>(model: &Model<B>) -> Result<Named> {
    let mut model = model.clone();
    let mut out = Named::new();
    for (name, slot) in params::slots(&mut model) {
        out.insert(name, values(slot.wire()).await?);
    }
    Ok(out)
}

/// trained − global, name by name.
pub fn delta(trained: &Named, global: &Named) -> Named {
    trained
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.iter().zip(&global[name]).map(|(a, b)| a - b).collect(),
            )
        })
        .collect()
}

/// The global L2 norm over every value of every tensor.
pub fn l2_norm(named: &Named) -> f64 {
    named
        .values()
        .flatten()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// A tensor's values, read from its device.
pub async fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| TrainerError::Backend(format!("{e:?}")))?;
    data.into_vec::<f32>()
        .map_err(|e| TrainerError::Backend(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(values: &[f32]) -> Named {
        [("a".to_string(), values.to_vec())].into_iter().collect()
    }

    #[test]
    fn delta_and_norm_are_per_value() {
        let d = delta(&named(&[4.0, 6.0]), &named(&[1.0, 2.0]));
        assert_eq!(d["a"], vec![3.0, 4.0]);
        assert!((l2_norm(&d) - 5.0).abs() < 1e-12);
    }
}
