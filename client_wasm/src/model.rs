//! The model: one Burn module per spec layer, run as the spec's graph. Layers with parameters
//! are Burn's modules (or `Norm`, `EncoderLayer`, a positional `Table`); the rest run as Burn's
//! tensor functions. Every layer's output shape is known from the spec's walk, so reshapes and
//! rank changes need no inference here, and a mismatch is a bug, not a user error.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig1d,
    PaddingConfig2d,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use crate::activations::{Act, apply, each, reshaped};
use crate::conv_gemm;
use crate::cpu_conv_op;
use crate::cpu_linear_op;
use crate::encoder::EncoderLayer;
use crate::layer_spec::LayerSpec;
use crate::norm::{BatchNorm, Norm};
use crate::precision;
use crate::spec::{ModelSpec, Node};

/// A learned tensor added to its input (a positional embedding), kept flat like the wire.
#[derive(Module, Debug)]
pub struct Table<B: Backend> {
    pub values: Param<Tensor<B, 1>>,
}

/// A layer without state; its spec node says what it computes.
#[derive(Module, Debug, Clone)]
pub struct Stateless;

// The encoder variant is large, but a model holds one `Layer` per spec layer, built once:
// boxing it would cost an indirection on every forward for no memory worth saving.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Layer<B: Backend> {
    Linear(Linear<B>),
    Conv1d(Conv1d<B>),
    Conv2d(Conv2d<B>),
    BatchNorm(BatchNorm<B>),
    Norm(Norm<B>),
    Embedding(Embedding<B>),
    Encoder(EncoderLayer<B>),
    Table(Table<B>),
    Dropout(Dropout),
    Stateless(Stateless),
}

/// What the forward pass needs to know of the spec: its nodes and every layer's output shape.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Each wire tensor's place in PyTorch's `state_dict` order.
    pub order: HashMap<String, usize>,
    pub outputs: Vec<Vec<usize>>,
    pub input_shape: Vec<usize>,
    pub input_ids: bool,
    /// Thin 2-d convolutions on the model's input run as matrix products (`conv_gemm::pays`):
    /// on WebGPU.
    pub conv_gemm: bool,
}

#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub layers: Vec<Layer<B>>,
    #[module(skip)]
    pub graph: Arc<Graph>,
}

impl ModelSpec {
    /// The spec is the model's config, so it builds the model the way Burn's configs do.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        let walk = self.walk().expect("a parsed spec walks");
        let layers = self.nodes.iter().map(|n| layer(&n.layer, device)).collect();
        let graph = Graph {
            nodes: self.nodes.clone(),
            order: walk
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect(),
            outputs: walk.outputs,
            input_shape: self.input_shape.clone(),
            input_ids: self.input_ids,
            conv_gemm: false,
        };
        Model {
            layers,
            graph: Arc::new(graph),
        }
    }
}

fn layer<B: Backend>(spec: &LayerSpec, device: &B::Device) -> Layer<B> {
    match spec {
        LayerSpec::Linear {
            in_features,
            out_features,
            bias,
        } => Layer::Linear(
            LinearConfig::new(*in_features, *out_features)
                .with_bias(*bias)
                .init(device),
        ),
        LayerSpec::Conv1d(c) => {
            let p = c.padding.0[0];
            Layer::Conv1d(
                Conv1dConfig::new(c.in_channels, c.out_channels, c.kernel_size.0[0])
                    .with_stride(c.stride.0[0])
                    .with_padding(PaddingConfig1d::Explicit(p, p))
                    .with_bias(c.bias)
                    .init(device),
            )
        }
        LayerSpec::Conv2d(c) => {
            let [ph, pw] = c.padding.0;
            Layer::Conv2d(
                Conv2dConfig::new([c.in_channels, c.out_channels], c.kernel_size.0)
                    .with_stride(c.stride.0)
                    .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                    .with_bias(c.bias)
                    .init(device),
            )
        }
        LayerSpec::Batchnorm1d(b) | LayerSpec::Batchnorm2d(b) => {
            Layer::BatchNorm(BatchNorm::new(b.num_features, b.eps, b.momentum, device))
        }
        LayerSpec::Layernorm {
            normalized_shape,
            eps,
            elementwise_affine,
            bias,
        } => Layer::Norm(Norm::new(
            normalized_shape.iter().product(),
            *eps,
            *elementwise_affine,
            *bias,
            device,
        )),
        LayerSpec::Embedding {
            num_embeddings,
            embedding_dim,
        } => Layer::Embedding(EmbeddingConfig::new(*num_embeddings, *embedding_dim).init(device)),
        LayerSpec::TransformerEncoderLayer(e) => Layer::Encoder(e.init(device)),
        LayerSpec::PositionalEmbedding { shape } => {
            let len = shape.iter().product::<usize>();
            let values =
                Tensor::random([len], burn::tensor::Distribution::Normal(0.0, 0.02), device);
            Layer::Table(Table {
                values: Param::from_tensor(values),
            })
        }
        LayerSpec::Dropout { p } => Layer::Dropout(DropoutConfig::new(*p).init()),
        _ => Layer::Stateless(Stateless),
    }
}

impl<B: Backend> Model<B> {
    /// Runs the thin 2-d convolutions on this model's input as matrix products from now on
    /// (`conv_gemm::pays`).
    pub fn lower_convolutions(&mut self) {
        Arc::make_mut(&mut self.graph).conv_gemm = true;
    }

    /// Logits `[N, classes]` for inputs `[N, prod(input_shape)]` (token ids as floats, for a
    /// model whose input is ids).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let g = &self.graph;
        let n = x.dims()[0];
        let input = if g.input_ids {
            Act::Ids(x.int())
        } else {
            Act::D2(x).shaped(n, &g.input_shape)
        };
        let mut outputs: Vec<Act<B>> = Vec::with_capacity(g.nodes.len());
        for (i, (node, layer)) in g.nodes.iter().zip(&self.layers).enumerate() {
            let inputs: Vec<Act<B>> = node
                .inputs
                .iter()
                .map(|j| j.map_or_else(|| input.clone(), |j| outputs[j].clone()))
                .collect();
            outputs.push(run(node, layer, inputs, n, &g.outputs[i], g.conv_gemm));
        }
        match outputs.pop() {
            Some(Act::D2(t)) => precision::cast(t, DType::F32),
            _ => unreachable!("the spec walk checked the output is [classes]"),
        }
    }
}

/// Whether a layer's input gradient is needed: not for a layer fed by the model's input alone.
fn input_grad(node: &Node) -> bool {
    node.inputs.iter().any(Option::is_some)
}

fn run<B: Backend>(
    node: &Node,
    layer: &Layer<B>,
    mut inputs: Vec<Act<B>>,
    n: usize,
    out: &[usize],
    conv_gemm: bool,
) -> Act<B> {
    if let Layer::Stateless(_) = layer {
        // Under mixed precision, inputs that meet (a residual sum) may differ: join in float32.
        if inputs.windows(2).any(|w| w[0].dtype() != w[1].dtype()) {
            inputs = inputs.into_iter().map(|a| a.cast(DType::F32)).collect();
        }
        return apply(&node.layer, inputs, n, out);
    }
    let x = inputs.swap_remove(0).cast(precision::compute_dtype(layer));
    match layer {
        Layer::Linear(l) => match x {
            Act::D2(x) => {
                let bias = l.bias.as_ref().map(|b| b.val());
                match cpu_linear_op::linear(&x, &l.weight.val(), bias.as_ref()) {
                    Some(y) => Act::D2(y),
                    None => Act::D2(l.forward(x)),
                }
            }
            x => each!(x, |t| l.forward(t)),
        },
        Layer::Conv1d(c) => Act::D3(c.forward(x.d3())),
        Layer::Conv2d(c) => {
            let LayerSpec::Conv2d(spec) = &node.layer else {
                unreachable!("a Conv2d layer is a conv2d node")
            };
            let options = ConvOptions::new(spec.stride.0, spec.padding.0, [1, 1], 1);
            let bias = c.bias.as_ref().map(|b| b.val());
            let (x, w) = (x.d4(), c.weight.val());
            if conv_gemm && conv_gemm::pays(c.weight.dims(), input_grad(node)) {
                return Act::D4(conv_gemm::conv2d(x, w, bias, &options, input_grad(node)));
            }
            match cpu_conv_op::conv2d(&x, &w, bias.as_ref(), &options) {
                Some(y) => Act::D4(y),
                None => Act::D4(c.forward(x)),
            }
        }
        Layer::BatchNorm(b) => each!(x, |t| b.forward(t)),
        Layer::Norm(m) => each!(x, |t| m.forward(t)),
        Layer::Embedding(e) => Act::D3(e.forward(x.ids())),
        Layer::Encoder(e) => Act::D3(e.forward(x.d3())),
        Layer::Dropout(d) => each!(x, |t| d.forward(t)),
        Layer::Table(table) => {
            // The table's own shape, with leading 1s up to the input's rank, then broadcast.
            let LayerSpec::PositionalEmbedding { shape } = &node.layer else {
                unreachable!("a table is a positional embedding")
            };
            let full: Vec<usize> = std::iter::once(n).chain(out.iter().copied()).collect();
            let mut ones = vec![1; full.len() - shape.len()];
            ones.extend(shape);
            x.add(reshaped(table.values.val(), &ones), &full)
        }
        Layer::Stateless(_) => unreachable!("handled above"),
    }
}

impl ModelSpec {
    /// For a model whose input is token ids: ids must be below the smallest embedding table
    /// the input feeds. `None` for float input.
    pub fn max_id(&self) -> Option<usize> {
        if !self.input_ids {
            return None;
        }
        self.nodes
            .iter()
            .filter(|n| n.inputs.contains(&None))
            .filter_map(|n| match n.layer {
                LayerSpec::Embedding { num_embeddings, .. } => Some(num_embeddings),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    use crate::params;
    use crate::spec::ModelSpec;

    const VECTORS: [&str; 2] = [
        include_str!("../../protocol/vectors/specs.json"),
        include_str!("../../protocol/vectors/graph-specs.json"),
    ];

    /// The valid specs of the shared vectors: with `all`, the built-in models and v1 chains too.
    fn graphs(all: bool) -> Vec<ModelSpec> {
        VECTORS[if all { 0 } else { 1 }..]
            .iter()
            .flat_map(|file| {
                let vectors: serde_json::Value = serde_json::from_str(file).unwrap();
                vectors["valid"].as_array().unwrap().clone()
            })
            .map(|case| ModelSpec::from_json(&case["spec"].to_string()).unwrap())
            .collect()
    }

    #[test]
    fn every_graph_runs_forward_and_backward_to_its_output_shape() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        for spec in graphs(false) {
            let model = spec.init::<B>(&device);
            let x = if spec.input_ids {
                Tensor::<B, 2>::random(
                    [3, spec.input_len()],
                    Distribution::Uniform(0.0, 4.0),
                    &device,
                )
                .floor()
            } else {
                Tensor::<B, 2>::random([3, spec.input_len()], Distribution::Default, &device)
            };
            let out = model.forward(x);
            assert_eq!(out.dims(), [3, spec.num_classes], "{}", spec.name);
            let grads = out.sum().backward();
            let mut model = model;
            let reached = params::slots(&mut model)
                .iter()
                .filter(|(_, slot)| slot.grad(&grads).is_some())
                .count();
            assert!(
                reached > 0,
                "{}: no gradient reached a parameter",
                spec.name
            );
        }
    }

    #[test]
    fn every_graphs_slots_are_its_wire_tensors_in_order() {
        for spec in graphs(true) {
            let mut model = spec.init::<Flex>(&Default::default());
            let got: Vec<_> = params::slots(&mut model)
                .into_iter()
                .map(|(name, slot)| (name, slot.wire().dims()[0]))
                .collect();
            let want: Vec<_> = spec
                .wire_tensors()
                .unwrap()
                .into_iter()
                .map(|t| (t.name, t.shape.iter().product::<usize>()))
                .collect();
            assert_eq!(got, want, "{}", spec.name);
        }
    }
}
