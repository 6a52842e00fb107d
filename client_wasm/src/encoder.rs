//! PyTorch's `nn.TransformerEncoderLayer` (`batch_first=True`): multi-head self-attention and a
//! feed-forward block, each with a residual connection and a layer norm, before (`norm_first`)
//! or after. Written out from Burn's tensor ops rather than Burn's `TransformerEncoder`, whose
//! separate query/key/value projections and norm placement differ from PyTorch's packed
//! `in_proj_weight`; this way every parameter maps one to one onto PyTorch's `state_dict`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;

use crate::activations::gelu;
use crate::cpu_relu_op::relu;
use crate::layer_spec::{Activation, Encoder};
use crate::norm::Norm;

#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Query, key and value projections packed as PyTorch packs them: `[d, 3d]` in Burn.
    pub in_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub linear1: Linear<B>,
    pub linear2: Linear<B>,
    pub norm1: Norm<B>,
    pub norm2: Norm<B>,
    pub dropout: Dropout,
    pub nhead: usize,
    pub norm_first: bool,
    pub gelu: bool,
}

impl Encoder {
    pub fn init<B: Backend>(&self, device: &B::Device) -> EncoderLayer<B> {
        let d = self.d_model;
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        EncoderLayer {
            in_proj: linear(d, 3 * d),
            out_proj: linear(d, d),
            linear1: linear(d, self.dim_feedforward),
            linear2: linear(self.dim_feedforward, d),
            norm1: Norm::new(d, self.layer_norm_eps, true, true, device),
            norm2: Norm::new(d, self.layer_norm_eps, true, true, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            nhead: self.nhead,
            norm_first: self.norm_first,
            gelu: self.activation == Activation::Gelu,
        }
    }
}

impl<B: Backend> EncoderLayer<B> {
    /// `x`: `[N, T, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.norm_first {
            let x = x.clone() + self.dropout.forward(self.attention(self.norm1.forward(x)));
            x.clone()
                + self
                    .dropout
                    .forward(self.feed_forward(self.norm2.forward(x)))
        } else {
            let x = self
                .norm1
                .forward(x.clone() + self.dropout.forward(self.attention(x)));
            self.norm2
                .forward(x.clone() + self.dropout.forward(self.feed_forward(x)))
        }
    }

    fn attention(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let (h, dh) = (self.nhead, d / self.nhead);
        let qkv = self.in_proj.forward(x);
        let heads = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([n, t, h, dh])
                .swap_dims(1, 2)
        };
        // PyTorch scales the queries before the product; the same order keeps rounding close.
        let q = heads(0).div_scalar((dh as f64).sqrt());
        let scores = q.matmul(heads(1).swap_dims(2, 3));
        let weights = self.dropout.forward(softmax(scores, 3));
        let out = weights.matmul(heads(2)).swap_dims(1, 2).reshape([n, t, d]);
        self.out_proj.forward(out)
    }

    fn feed_forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.linear1.forward(x);
        let hidden = if self.gelu {
            gelu(hidden)
        } else {
            relu(hidden)
        };
        self.linear2.forward(self.dropout.forward(hidden))
    }
}
