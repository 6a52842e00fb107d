//! Named tensors in PyTorch's names and layouts: safetensors in and out, into and out of the
//! Burn model (through `params`' table), and the arithmetic on them (delta, norm).

use std::collections::BTreeMap;

use crate::encoding::{self, Encoding};
use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::params;
use crate::spec::ModelSpec;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Flat f32 values per wire name, in the spec's order.
pub type Named = BTreeMap<String, Vec<f32>>;

/// Parse a payload in any encoding (SPEC §2.1) and check names, shapes and finiteness against
/// the spec.
pub fn decode(bytes: &[u8], spec: &ModelSpec) -> Result<Named> {
    let named = encoding::decode(bytes, &spec.wire_tensors()?)?;
    if let Some((name, _)) = named.iter().find(|(_, v)| v.iter().any(|x| !x.is_finite())) {
        return Err(TrainerError::Weights(format!(
            "{name}: contains NaN or infinity"
        )));
    }
    Ok(named)
}

/// Serialise named tensors as fp32 safetensors, shapes from the spec; names absent from `named`
/// are left out.
pub fn encode(named: &Named, spec: &ModelSpec) -> Result<Vec<u8>> {
    encoding::encode(named, &spec.wire_tensors()?, Encoding::Fp32)
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
    crate::fault::before_read::<B>()?;
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
