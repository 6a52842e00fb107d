//! Normalisation layers with PyTorch's semantics, where Burn's differ: `Norm` is `nn.LayerNorm`
//! over the last dims given by `normalized_shape` (Burn's `LayerNorm` normalises only the last
//! one), with weight and bias kept flat, `[prod(normalized_shape)]`, as on the wire; `BatchNorm`
//! keeps PyTorch's running statistics.

use burn::module::{Module, Param, RunningState};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    pub weight: Option<Param<Tensor<B, 1>>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub len: usize,
    pub eps: f64,
}

impl<B: Backend> Norm<B> {
    /// PyTorch's initial values: weight 1, bias 0.
    pub fn new(len: usize, eps: f64, affine: bool, bias: bool, device: &B::Device) -> Self {
        let ones = || Param::from_tensor(Tensor::ones([len], device));
        let zeros = || Param::from_tensor(Tensor::zeros([len], device));
        Self {
            weight: affine.then(ones),
            bias: (affine && bias).then(zeros),
            len,
            eps,
        }
    }

    /// Normalise each run of the last `len` values of `x` (its trailing dims hold exactly `len`).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows = dims.iter().product::<usize>() / self.len;
        let flat: Tensor<B, 2> = x.reshape([rows, self.len]);
        let (var, mean) = flat.clone().var_mean_bias(1);
        let mut y = (flat - mean).div(var.add_scalar(self.eps).sqrt());
        if let Some(w) = &self.weight {
            y = y.mul(w.val().unsqueeze_dim(0));
        }
        if let Some(b) = &self.bias {
            y = y.add(b.val().unsqueeze_dim(0));
        }
        y.reshape(dims)
    }
}

/// PyTorch's `nn.BatchNorm1d`/`2d`. Burn's `BatchNorm` updates its running variance with the
/// batch's biased variance; PyTorch uses the unbiased one (× n/(n−1)), which matters at small
/// batches: `[N, C]` features at batch 10 would drift 11% from PyTorch's statistics.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    pub beta: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    pub running_var: RunningState<Tensor<B, 1>>,
    pub momentum: f64,
    pub eps: f64,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(channels: usize, eps: f64, momentum: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum,
            eps,
        }
    }

    /// `x`: `[N, C, ...]`. Batch statistics while training (autodiff on), running ones otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let channels = dims[1];
        let mut per_channel = [1; D];
        per_channel[1] = channels;
        let (mean, var) = if B::ad_enabled(&x.device()) {
            let n = dims.iter().product::<usize>() / channels;
            let rows: Tensor<B, 2> = x.clone().swap_dims(0, 1).reshape([channels, n]);
            let (var, mean) = rows.var_mean_bias(1);
            let (mean, var) = (mean.reshape([channels]), var.reshape([channels]));
            let unbiased = var
                .clone()
                .detach()
                .mul_scalar(n as f64 / (n.max(2) - 1) as f64);
            let keep = 1.0 - self.momentum;
            let running_mean = self.running_mean.value_sync().mul_scalar(keep);
            let running_var = self.running_var.value_sync().mul_scalar(keep);
            self.running_mean
                .update(running_mean + mean.clone().detach().mul_scalar(self.momentum));
            self.running_var
                .update(running_var + unbiased.mul_scalar(self.momentum));
            (mean, var)
        } else {
            (self.running_mean.value(), self.running_var.value())
        };
        let scale = self.gamma.val().div(var.add_scalar(self.eps).sqrt());
        let shift = self.beta.val() - mean.mul(scale.clone());
        x.mul(scale.reshape(per_channel)) + shift.reshape(per_channel)
    }
}
