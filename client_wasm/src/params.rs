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

use burn::module::{Param, ParamId, RunningState};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor, TensorData};

use crate::model::{Layer, Model};
use crate::norm::Norm;
use crate::precision;

/// Where one wire tensor lives in a Burn layer. Mutable, so loading can replace it; readers
/// walk a clone of the model, which costs no tensor copies (Burn's tensors are shared handles).
pub enum Slot<'a, B: Backend> {
    /// A Linear weight, transposed relative to PyTorch.
    Transposed(&'a mut Param<Tensor<B, 2>>),
    /// An embedding table, `[num, dim]` as in PyTorch.
    Matrix(&'a mut Param<Tensor<B, 2>>),
    /// A Conv1d weight, `[out, in, k]` as in PyTorch.
    Kernel1(&'a mut Param<Tensor<B, 3>>),
    /// A Conv2d weight, `[out, in, kh, kw]` as in PyTorch.
    Kernel(&'a mut Param<Tensor<B, 4>>),
    /// A bias, a norm's affine weight or bias, or a flat table (any shape on the wire).
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// BatchNorm's running mean or variance: carried on the wire, never trained.
    Running(&'a mut RunningState<Tensor<B, 1>>),
}

fn linear<'a, B: Backend>(
    out: &mut Vec<(String, Slot<'a, B>)>,
    weight: String,
    bias: String,
    l: &'a mut Linear<B>,
) {
    out.push((weight, Slot::Transposed(&mut l.weight)));
    if let Some(b) = &mut l.bias {
        out.push((bias, Slot::Vector(b)));
    }
}

fn norm<'a, B: Backend>(out: &mut Vec<(String, Slot<'a, B>)>, at: &str, n: &'a mut Norm<B>) {
    if let Some(w) = &mut n.weight {
        out.push((format!("{at}.weight"), Slot::Vector(w)));
    }
    if let Some(b) = &mut n.bias {
        out.push((format!("{at}.bias"), Slot::Vector(b)));
    }
}

/// Every wire tensor of `model` with its PyTorch name, in `state_dict` order.
pub fn slots<B: Backend>(model: &mut Model<B>) -> Vec<(String, Slot<'_, B>)> {
    let graph = model.graph.clone();
    let mut out = Vec::new();
    for (node, layer) in graph.nodes.iter().zip(model.layers.iter_mut()) {
        let at = node.module.as_str();
        let name = |p: &str| format!("{at}.{p}");
        match layer {
            Layer::Linear(l) => linear(&mut out, name("weight"), name("bias"), l),
            Layer::Conv1d(c) => {
                out.push((name("weight"), Slot::Kernel1(&mut c.weight)));
                if let Some(b) = &mut c.bias {
                    out.push((name("bias"), Slot::Vector(b)));
                }
            }
            Layer::Conv2d(c) => {
                out.push((name("weight"), Slot::Kernel(&mut c.weight)));
                if let Some(b) = &mut c.bias {
                    out.push((name("bias"), Slot::Vector(b)));
                }
            }
            Layer::BatchNorm(bn) => {
                out.push((name("weight"), Slot::Vector(&mut bn.gamma)));
                out.push((name("bias"), Slot::Vector(&mut bn.beta)));
                out.push((name("running_mean"), Slot::Running(&mut bn.running_mean)));
                out.push((name("running_var"), Slot::Running(&mut bn.running_var)));
            }
            Layer::Norm(n) => norm(&mut out, at, n),
            Layer::Embedding(e) => out.push((name("weight"), Slot::Matrix(&mut e.weight))),
            Layer::Encoder(e) => {
                let attn = |p: &str| format!("{at}.self_attn.{p}");
                linear(
                    &mut out,
                    attn("in_proj_weight"),
                    attn("in_proj_bias"),
                    &mut e.in_proj,
                );
                linear(
                    &mut out,
                    attn("out_proj.weight"),
                    attn("out_proj.bias"),
                    &mut e.out_proj,
                );
                linear(
                    &mut out,
                    name("linear1.weight"),
                    name("linear1.bias"),
                    &mut e.linear1,
                );
                linear(
                    &mut out,
                    name("linear2.weight"),
                    name("linear2.bias"),
                    &mut e.linear2,
                );
                norm(&mut out, &name("norm1"), &mut e.norm1);
                norm(&mut out, &name("norm2"), &mut e.norm2);
            }
            Layer::Table(t) => out.push((at.to_string(), Slot::Vector(&mut t.values))),
            Layer::Dropout(_) | Layer::Stateless(_) => {}
        }
    }
    // PyTorch orders by module tree, not by graph order; the spec's walk knows that order.
    out.sort_by_key(|(name, _)| graph.order.get(name).copied().unwrap_or(usize::MAX));
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
            Slot::Matrix(p) => p.val().flatten(0, 1),
            Slot::Kernel1(p) => p.val().flatten(0, 2),
            Slot::Kernel(p) => p.val().flatten(0, 3),
            Slot::Vector(p) => p.val(),
            Slot::Running(r) => r.value_sync(),
        }
    }

    /// A trained parameter in Burn's own layout, flattened; `None` for running statistics.
    /// Penalties that sum over values need no transposition.
    pub fn trained(&self) -> Option<Tensor<B, 1>> {
        match self {
            Slot::Transposed(p) | Slot::Matrix(p) => Some(p.val().flatten(0, 1)),
            Slot::Kernel1(p) => Some(p.val().flatten(0, 2)),
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
                // Transposed here rather than as a tensor view: a strided weight multiplies in
                // another summation order than the contiguous one the optimizer's steps leave, and
                // a job resumed from a checkpoint must compute exactly what the whole job did.
                let mut burn = Vec::with_capacity(values.len());
                for i in 0..d_in {
                    burn.extend((0..d_out).map(|o| values[o * d_in + i]));
                }
                let t = Tensor::<B, 2>::from_data(TensorData::new(burn, vec![d_in, d_out]), device);
                *p = Param::from_tensor(t);
            }
            Slot::Matrix(p) => {
                let dims: [usize; 2] = p.lazy_shape().dims();
                *p = Param::from_tensor(Tensor::from_data(tensor(dims.to_vec()), device));
            }
            Slot::Kernel1(p) => {
                let dims: [usize; 3] = p.lazy_shape().dims();
                *p = Param::from_tensor(Tensor::from_data(tensor(dims.to_vec()), device));
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
            Slot::Matrix(p) => Some(p.grad(grads)?.flatten(0, 1)),
            Slot::Kernel1(p) => Some(p.grad(grads)?.flatten(0, 2)),
            Slot::Kernel(p) => Some(p.grad(grads)?.flatten(0, 3)),
            Slot::Vector(p) => p.grad(grads),
            Slot::Running(_) => None,
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: scale every gradient by `min(1, max_norm / (norm + 1e-6))`,
/// the gradients' global L2 norm. All on the device: no read, so the GPU never waits for the CPU.
pub fn clip_grad_norm<B: AutodiffBackend>(
    model: &mut Model<B>,
    grads: &mut GradientsParams,
    max_norm: f64,
) {
    let mut squares: Option<Tensor<B::InnerBackend, 1>> = None;
    for (_, slot) in slots(model) {
        if let Some(g) = slot.step_grad(grads) {
            let sq = g.powi_scalar(2).sum();
            squares = Some(squares.map_or(sq.clone(), |s| s + sq));
        }
    }
    let Some(squares) = squares else {
        return;
    };
    let coef = squares
        .sqrt()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    for (_, slot) in slots(model) {
        slot.map_step_grad(grads, &Scale(coef.clone()));
    }
}

/// Mixed precision's unscaling (see `precision`): every gradient divided by `scale`, and all of
/// them zeroed if any is not finite. Returns that overflow flag (1 or 0), still on the device;
/// `None` for a model with nothing to train.
pub fn unscale_grads<B: AutodiffBackend>(
    model: &mut Model<B>,
    grads: &mut GradientsParams,
    scale: f32,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut sum: Option<Tensor<B::InnerBackend, 1>> = None;
    for (_, slot) in slots(model) {
        if let Some(g) = slot.step_grad(grads) {
            let s = g.sum();
            sum = Some(sum.map_or(s.clone(), |t| t + s));
        }
    }
    // A sum is not finite if any term is not (or if finite ones overflow it: also too large).
    let overflow = sum?.is_finite().bool_not();
    for (_, slot) in slots(model) {
        slot.map_step_grad(grads, &Unscale(overflow.clone(), scale));
    }
    Some(overflow.float())
}

/// A transformation of a gradient that keeps its shape, whatever its rank.
trait GradMap<B: Backend> {
    fn apply<const D: usize>(&self, g: Tensor<B, D>) -> Tensor<B, D>;
}

struct Scale<B: Backend>(Tensor<B, 1>);

impl<B: Backend> GradMap<B> for Scale<B> {
    fn apply<const D: usize>(&self, g: Tensor<B, D>) -> Tensor<B, D> {
        g.mul(self.0.clone().reshape([1; D]))
    }
}

struct Unscale<B: Backend>(Tensor<B, 1, Bool>, f32);

impl<B: Backend> GradMap<B> for Unscale<B> {
    fn apply<const D: usize>(&self, g: Tensor<B, D>) -> Tensor<B, D> {
        precision::unscale(g, &self.0, self.1)
    }
}

impl<B: AutodiffBackend> Slot<'_, B> {
    /// This parameter's gradient as the optimizer will see it, flattened (any layout: a norm).
    pub(crate) fn step_grad(&self, grads: &GradientsParams) -> Option<Tensor<B::InnerBackend, 1>> {
        match self {
            Slot::Transposed(p) | Slot::Matrix(p) => {
                Some(grads.get::<B::InnerBackend, 2>(p.id)?.flatten(0, 1))
            }
            Slot::Kernel1(p) => Some(grads.get::<B::InnerBackend, 3>(p.id)?.flatten(0, 2)),
            Slot::Kernel(p) => Some(grads.get::<B::InnerBackend, 4>(p.id)?.flatten(0, 3)),
            Slot::Vector(p) => grads.get::<B::InnerBackend, 1>(p.id),
            Slot::Running(_) => None,
        }
    }

    fn map_step_grad(&self, grads: &mut GradientsParams, f: &impl GradMap<B::InnerBackend>) {
        fn map<B: Backend, const D: usize>(
            grads: &mut GradientsParams,
            id: ParamId,
            f: &impl GradMap<B>,
        ) {
            if let Some(g) = grads.remove::<B, D>(id) {
                grads.register(id, f.apply(g));
            }
        }
        match self {
            Slot::Transposed(p) | Slot::Matrix(p) => map::<B::InnerBackend, 2>(grads, p.id, f),
            Slot::Kernel1(p) => map::<B::InnerBackend, 3>(grads, p.id, f),
            Slot::Kernel(p) => map::<B::InnerBackend, 4>(grads, p.id, f),
            Slot::Vector(p) => map::<B::InnerBackend, 1>(grads, p.id, f),
            Slot::Running(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::learner::block_on;
    use crate::spec::ModelSpec;
    use crate::weights::{self, Named};

    const SPEC: &str = include_str!("../../protocol/models/mnist-cnn-bn.json");

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
