//! The model: one Burn module per spec layer, in a `Vec` so parameter paths are `layers.<i>`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu,
};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use crate::spec::{LayerSpec, ModelSpec};

/// Flattening has no parameters; a unit struct keeps the layer list index-aligned with the spec.
#[derive(Module, Debug, Clone)]
pub struct Flatten;

#[derive(Module, Debug)]
pub enum Layer<B: Backend> {
    Linear(Linear<B>),
    Conv2d(Conv2d<B>),
    MaxPool2d(MaxPool2d),
    BatchNorm(BatchNorm<B>),
    Dropout(Dropout),
    Relu(Relu),
    Flatten(Flatten),
}

#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub layers: Vec<Layer<B>>,
}

/// An activation between layers: flat `[N, D]` or image `[N, C, H, W]`.
enum Act<B: Backend> {
    Flat(Tensor<B, 2>),
    Image(Tensor<B, 4>),
}

impl ModelSpec {
    /// The spec is the model's config, so it builds the model the way Burn's configs do.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        let layers = self
            .layers
            .iter()
            .map(|layer| match *layer {
                LayerSpec::Flatten {} => Layer::Flatten(Flatten),
                LayerSpec::Relu {} => Layer::Relu(Relu),
                LayerSpec::Dropout { p } => Layer::Dropout(DropoutConfig::new(p).init()),
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    bias,
                } => Layer::Linear(
                    LinearConfig::new(in_features, out_features)
                        .with_bias(bias)
                        .init(device),
                ),
                LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size: k,
                    stride: s,
                    padding: p,
                    bias,
                } => Layer::Conv2d(
                    Conv2dConfig::new([in_channels, out_channels], [k, k])
                        .with_stride([s, s])
                        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                        .with_bias(bias)
                        .init(device),
                ),
                LayerSpec::Maxpool2d {
                    kernel_size: k,
                    stride,
                } => {
                    let s = stride.unwrap_or(k);
                    Layer::MaxPool2d(MaxPool2dConfig::new([k, k]).with_strides([s, s]).init())
                }
                LayerSpec::Batchnorm2d {
                    num_features,
                    eps,
                    momentum,
                } => Layer::BatchNorm(
                    BatchNormConfig::new(num_features)
                        .with_epsilon(eps)
                        .with_momentum(momentum)
                        .init(device),
                ),
            })
            .collect();
        Model { layers }
    }
}

impl<B: Backend> Model<B> {
    /// Logits `[N, classes]` for inputs `[N, prod(input_shape)]`.
    pub fn forward(&self, x: Tensor<B, 2>, input_shape: &[usize]) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let mut act = match *input_shape {
            [c, h, w] => Act::Image(x.reshape([n, c, h, w])),
            [_] => Act::Flat(x),
            // A 2-D input is an image with one channel.
            [h, w] => Act::Image(x.reshape([n, 1, h, w])),
            _ => unreachable!("the spec validated input_shape"),
        };
        for layer in &self.layers {
            act = match (layer, act) {
                (Layer::Flatten(_), Act::Image(t)) => Act::Flat(t.flatten(1, 3)),
                (Layer::Flatten(_), flat) => flat,
                (Layer::Relu(_), Act::Flat(t)) => Act::Flat(relu(t)),
                (Layer::Relu(_), Act::Image(t)) => Act::Image(relu(t)),
                (Layer::Dropout(d), Act::Flat(t)) => Act::Flat(d.forward(t)),
                (Layer::Dropout(d), Act::Image(t)) => Act::Image(d.forward(t)),
                (Layer::Linear(l), Act::Flat(t)) => Act::Flat(l.forward(t)),
                (Layer::Conv2d(c), Act::Image(t)) => Act::Image(c.forward(t)),
                (Layer::MaxPool2d(p), Act::Image(t)) => Act::Image(p.forward(t)),
                (Layer::BatchNorm(b), Act::Image(t)) => Act::Image(b.forward(t)),
                _ => unreachable!("the spec validated every layer's input shape"),
            };
        }
        match act {
            Act::Flat(t) => t,
            Act::Image(_) => unreachable!("the spec validated the output shape"),
        }
    }
}
