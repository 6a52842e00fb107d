//! The one table from Burn's layers to PyTorch's `state_dict`: which tensor of which layer
//! travels under which name, and in which layout. Loading, reading, gradients and FedProx's
//! penalty all walk the model through `slots`, so they cannot disagree about a layer.
//!
//! Burn keeps a Linear weight as `[in, out]`; PyTorch and the wire as `[out, in]`. Conv2d
//! weights share PyTorch's layout. BatchNorm's `weight`/`bias` are Burn's `gamma`/`beta`; its
//! running statistics travel too (averaged like parameters), while PyTorch's integer
//! `num_batches_tracked` never does.
//!
//! A table of our own rather than Burn's `ModuleVisitor`: that visitor reads a `RunningState`
//! without merging its pending update, so it would send stale BatchNorm statistics.

use burn::module::{Param, RunningState};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::model::{Layer, Model};

/// Where one wire tensor lives in a Burn layer. Mutable, so loading can replace it; readers
/// walk a clone of the model, which costs no tensor copies (Burn's tensors are shared handles).
pub enum Slot<'a, B: Backend> {
    /// A Linear weight, transposed relative to PyTorch.
    Transposed(&'a mut Param<Tensor<B, 2>>),
    /// A Conv2d weight, `[out, in, k, k]` as in PyTorch.
    Kernel(&'a mut Param<Tensor<B, 4>>),
    /// A bias, or BatchNorm's affine weight or bias.
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// BatchNorm's running mean or variance: carried on the wire, never trained.
    Running(&'a mut RunningState<Tensor<B, 1>>),
}

/// Every wire tensor of `model` with its PyTorch name, in `state_dict` order.
pub fn slots<B: Backend>(model: &mut Model<B>) -> Vec<(String, Slot<'_, B>)> {
    let mut out = Vec::new();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let mut at = |p: &str, slot| out.push((format!("layers.{i}.{p}"), slot));
        match layer {
            Layer::Linear(l) => {
                at("weight", Slot::Transposed(&mut l.weight));
                if let Some(b) = &mut l.bias {
                    at("bias", Slot::Vector(b));
                }
            }
            Layer::Conv2d(c) => {
                at("weight", Slot::Kernel(&mut c.weight));
                if let Some(b) = &mut c.bias {
                    at("bias", Slot::Vector(b));
                }
            }
            Layer::BatchNorm(bn) => {
                at("weight", Slot::Vector(&mut bn.gamma));
                at("bias", Slot::Vector(&mut bn.beta));
                at("running_mean", Slot::Running(&mut bn.running_mean));
                at("running_var", Slot::Running(&mut bn.running_var));
            }
            Layer::MaxPool2d(_) | Layer::Dropout(_) | Layer::Relu(_) | Layer::Flatten(_) => {}
        }
    }
    out
}

/// Draw every lazily initialised parameter now. Readers walk clones of the model, and an
/// uninitialised clone would draw values of its own instead of sharing the model's.
pub fn materialize<B: Backend>(model: &mut Model<B>) {
    for (_, slot) in slots(model) {
        // Reading a parameter's value is what initialises it.
        let _ = slot.trained();
    }
}

impl<B: Backend> Slot<'_, B> {
    /// The tensor in PyTorch's layout, flattened.
    pub fn wire(&self) -> Tensor<B, 1> {
        match self {
            Slot::Transposed(p) => p.val().transpose().flatten(0, 1),
            Slot::Kernel(p) => p.val().flatten(0, 3),
            Slot::Vector(p) => p.val(),
            Slot::Running(r) => r.value_sync(),
        }
    }

    /// A trained parameter in Burn's own layout, flattened; `None` for running statistics.
    /// Penalties that sum over values need no transposition.
    pub fn trained(&self) -> Option<Tensor<B, 1>> {
        match self {
            Slot::Transposed(p) => Some(p.val().flatten(0, 1)),
            Slot::Kernel(p) => Some(p.val().flatten(0, 3)),
            Slot::Vector(p) => Some(p.val()),
            Slot::Running(_) => None,
        }
    }

    pub fn is_trained(&self) -> bool {
        !matches!(self, Slot::Running(_))
    }

    /// Replace the tensor with `values` given in PyTorch's layout (already checked against the spec).
    pub fn set(self, values: &[f32], device: &B::Device) {
        let tensor = |shape: Vec<usize>| TensorData::new(values.to_vec(), shape);
        match self {
            Slot::Transposed(p) => {
                // The lazy shape: the values are replaced, so drawing them first would be waste.
                let [d_in, d_out] = p.lazy_shape().dims();
                let t = Tensor::<B, 2>::from_data(tensor(vec![d_out, d_in]), device);
                *p = Param::from_tensor(t.transpose());
            }
            Slot::Kernel(p) => {
                let dims: [usize; 4] = p.lazy_shape().dims();
                *p = Param::from_tensor(Tensor::from_data(tensor(dims.to_vec()), device));
            }
            Slot::Vector(p) => {
                *p = Param::from_tensor(Tensor::from_data(tensor(vec![values.len()]), device));
            }
            Slot::Running(r) => {
                *r = RunningState::new(Tensor::from_data(tensor(vec![values.len()]), device));
            }
        }
    }
}

impl<B: AutodiffBackend> Slot<'_, B> {
    /// The gradient in PyTorch's layout, flattened. `None` for running statistics, and for a
    /// parameter the loss did not reach.
    pub fn grad(&self, grads: &B::Gradients) -> Option<Tensor<B::InnerBackend, 1>> {
        match self {
            Slot::Transposed(p) => Some(p.grad(grads)?.transpose().flatten(0, 1)),
            Slot::Kernel(p) => Some(p.grad(grads)?.flatten(0, 3)),
            Slot::Vector(p) => p.grad(grads),
            Slot::Running(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::spec::ModelSpec;
    use crate::weights::{self, Named};

    const SPEC: &str = include_str!("../../protocol/models/mnist-cnn-bn.json");

    /// The CPU backend's reads are ready at once, so one poll finishes them.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a CPU read waited"),
        }
    }

    #[test]
    fn the_table_names_every_wire_tensor_of_the_spec() {
        let spec = ModelSpec::from_json(SPEC).unwrap();
        let mut model = spec.init::<Flex>(&Default::default());
        let got: Vec<_> = slots(&mut model)
            .into_iter()
            .map(|(name, slot)| (name, slot.wire().dims()[0]))
            .collect();
        let want: Vec<_> = spec
            .wire_tensors()
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.shape.iter().product()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_materialized_model_reads_the_same_twice() {
        let spec = ModelSpec::from_json(SPEC).unwrap();
        let mut model = spec.init::<Flex>(&Default::default());
        materialize(&mut model);
        let first = block_on(weights::read(&model)).unwrap();
        assert_eq!(block_on(weights::read(&model)).unwrap(), first);
    }

    #[test]
    fn weights_load_and_read_back_in_pytorchs_layout() {
        let spec = ModelSpec::from_json(SPEC).unwrap();
        let device = Default::default();
        let named: Named = spec
            .wire_tensors()
            .unwrap()
            .into_iter()
            .map(|t| {
                let n: usize = t.shape.iter().product();
                (t.name, (0..n).map(|v| (v % 13) as f32 + 0.5).collect())
            })
            .collect();
        let model = weights::load(spec.init::<Flex>(&device), &named, &device);
        let read = block_on(weights::read(&model)).unwrap();
        assert_eq!(read, named);
        // PyTorch's [out, in] is Burn's [in, out]: element (0, 1) on the wire is (1, 0) in Burn.
        let Layer::Linear(l) = &model.layers[9] else {
            panic!("layer 9 is the last linear")
        };
        let burn: Vec<f32> = l.weight.val().into_data().into_vec().unwrap();
        assert_eq!(burn[10], named["layers.9.weight"][1]);
    }
}
