//! Named tensors in PyTorch's names and layouts, in and out of the Burn model.
//!
//! Burn keeps a Linear weight as `[in, out]`; PyTorch and the wire as `[out, in]`.
//! Conv2d weights share PyTorch's layout. BatchNorm's `weight`/`bias` are Burn's
//! `gamma`/`beta`; its running statistics travel too (see README: averaged like
//! parameters), while PyTorch's integer `num_batches_tracked` never does.

use std::collections::BTreeMap;

use burn::module::{Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, TrainerError};
use crate::model::{Layer, Model};
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

fn tensor<B: Backend, const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Replace the model's parameters with the named (PyTorch-layout) tensors.
pub fn load<B: Backend>(model: Model<B>, named: &Named, device: &B::Device) -> Model<B> {
    let get = |i: usize, p: &str| named.get(&format!("layers.{i}.{p}")).map(Vec::as_slice);
    let layers = model
        .layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| match layer {
            Layer::Linear(mut l) => {
                let [d_in, d_out] = l.weight.shape().dims();
                let w = tensor::<B, 2>(get(i, "weight").expect("validated"), [d_out, d_in], device);
                l.weight = Param::from_tensor(w.transpose());
                if let Some(b) = get(i, "bias") {
                    l.bias = Some(Param::from_tensor(tensor(b, [d_out], device)));
                }
                Layer::Linear(l)
            }
            Layer::Conv2d(mut c) => {
                let dims: [usize; 4] = c.weight.shape().dims();
                c.weight =
                    Param::from_tensor(tensor(get(i, "weight").expect("validated"), dims, device));
                if let Some(b) = get(i, "bias") {
                    c.bias = Some(Param::from_tensor(tensor(b, [dims[0]], device)));
                }
                Layer::Conv2d(c)
            }
            Layer::BatchNorm(mut bn) => {
                let n = bn.gamma.shape().dims::<1>()[0];
                let t = |p: &str| tensor::<B, 1>(get(i, p).expect("validated"), [n], device);
                bn.gamma = Param::from_tensor(t("weight"));
                bn.beta = Param::from_tensor(t("bias"));
                bn.running_mean = RunningState::new(t("running_mean"));
                bn.running_var = RunningState::new(t("running_var"));
                Layer::BatchNorm(bn)
            }
            other => other,
        })
        .collect();
    Model { layers }
}

/// Read every wire tensor back in PyTorch layout. Async, because WebGPU reads must be.
pub async fn read<B: Backend>(model: &Model<B>) -> Result<Named> {
    let mut out = Named::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let mut put = |p: &str, v: Vec<f32>| out.insert(format!("layers.{i}.{p}"), v);
        match layer {
            Layer::Linear(l) => {
                put("weight", values(l.weight.val().transpose()).await?);
                if let Some(b) = &l.bias {
                    put("bias", values(b.val()).await?);
                }
            }
            Layer::Conv2d(c) => {
                put("weight", values(c.weight.val()).await?);
                if let Some(b) = &c.bias {
                    put("bias", values(b.val()).await?);
                }
            }
            Layer::BatchNorm(bn) => {
                put("weight", values(bn.gamma.val()).await?);
                put("bias", values(bn.beta.val()).await?);
                put("running_mean", values(bn.running_mean.value_sync()).await?);
                put("running_var", values(bn.running_var.value_sync()).await?);
            }
            _ => {}
        }
    }
    Ok(out)
}

pub async fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| TrainerError::Backend(format!("{e:?}")))?;
    data.into_vec::<f32>()
        .map_err(|e| TrainerError::Backend(format!("{e:?}")))
}
