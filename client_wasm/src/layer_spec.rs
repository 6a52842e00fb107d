//! One spec layer's type and attributes, as `protocol/schemas/model-spec.schema.json` defines
//! them (generated from `coordinator/models/layer_types.py`), with PyTorch's defaults. The
//! layer's place in the graph (`name`, `inputs`, `module`) is read by `spec`, not here.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A size given as one int or as `[h, w]`, as PyTorch's `kernel_size=3` or `(3, 5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair(pub [usize; 2]);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(usize),
            Two([usize; 2]),
        }
        // serde's own error for an untagged enum names neither of the forms it would take.
        let either = Either::deserialize(d)
            .map_err(|_| D::Error::custom("expected a size or a pair of sizes [h, w]"))?;
        Ok(match either {
            Either::One(v) => Pair([v, v]),
            Either::Two(v) => Pair(v),
        })
    }
}

impl Pair {
    /// The first `n` sizes (1 for the 1-d layers, which read `[a, b]` as `a`, like the Python).
    pub fn take(&self, n: usize) -> &[usize] {
        &self.0[..n]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approximate {
    None,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
}

// Braces on attribute-less variants: serde ignores unknown fields of an internally tagged unit
// variant, and `{"type": "relu", "inplace": true}` must be refused as the schema refuses it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Flatten {
        #[serde(default = "one_i")]
        start_dim: i64,
        #[serde(default = "minus_one")]
        end_dim: i64,
    },
    Reshape {
        shape: Vec<i64>,
    },
    Permute {
        dims: Vec<usize>,
    },
    Relu {},
    Gelu {
        #[serde(default = "no_approximation")]
        approximate: Approximate,
    },
    Tanh {},
    Sigmoid {},
    LeakyRelu {
        #[serde(default = "slope")]
        negative_slope: f64,
    },
    Softmax {
        #[serde(default = "minus_one")]
        dim: i64,
    },
    LogSoftmax {
        #[serde(default = "minus_one")]
        dim: i64,
    },
    Dropout {
        p: f64,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv1d(Conv),
    Conv2d(Conv),
    Maxpool1d(Pool),
    Maxpool2d(Pool),
    Avgpool1d(Pool),
    Avgpool2d(Pool),
    #[serde(rename = "adaptive_avgpool1d")]
    AdaptiveAvgpool1d {
        output_size: Pair,
    },
    #[serde(rename = "adaptive_avgpool2d")]
    AdaptiveAvgpool2d {
        output_size: Pair,
    },
    Batchnorm1d(BatchNorm),
    Batchnorm2d(BatchNorm),
    Layernorm {
        normalized_shape: Vec<usize>,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default = "yes")]
        elementwise_affine: bool,
        #[serde(default = "yes")]
        bias: bool,
    },
    Embedding {
        num_embeddings: usize,
        embedding_dim: usize,
    },
    Add {},
    Concat {
        dim: i64,
    },
    Mean {
        dim: Vec<i64>,
        #[serde(default)]
        keepdim: bool,
    },
    TransformerEncoderLayer(Encoder),
    PositionalEmbedding {
        shape: Vec<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: Pair,
    #[serde(default = "one_pair")]
    pub stride: Pair,
    #[serde(default = "zero_pair")]
    pub padding: Pair,
    #[serde(default = "yes")]
    pub bias: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub kernel_size: Pair,
    /// `None`: the kernel size, as in PyTorch.
    #[serde(default, deserialize_with = "some_pair")]
    pub stride: Option<Pair>,
    #[serde(default = "zero_pair")]
    pub padding: Pair,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    pub num_features: usize,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default = "momentum")]
    pub momentum: f64,
}

/// `nn.TransformerEncoderLayer` with `batch_first=True`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoder {
    pub d_model: usize,
    pub nhead: usize,
    #[serde(default = "feedforward")]
    pub dim_feedforward: usize,
    #[serde(default = "encoder_dropout")]
    pub dropout: f64,
    #[serde(default = "relu")]
    pub activation: Activation,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub norm_first: bool,
}

/// A present `stride` must be a size: the schema refuses `null`, which plain `Option` takes.
fn some_pair<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Pair>, D::Error> {
    Pair::deserialize(d).map(Some)
}

fn yes() -> bool {
    true
}
fn one_i() -> i64 {
    1
}
fn minus_one() -> i64 {
    -1
}
fn one_pair() -> Pair {
    Pair([1, 1])
}
fn zero_pair() -> Pair {
    Pair([0, 0])
}
fn eps() -> f64 {
    1e-5
}
fn momentum() -> f64 {
    0.1
}
fn slope() -> f64 {
    0.01
}
fn no_approximation() -> Approximate {
    Approximate::None
}
fn feedforward() -> usize {
    2048
}
fn encoder_dropout() -> f64 {
    0.1
}
fn relu() -> Activation {
    Activation::Relu
}

impl LayerSpec {
    /// The schema's name of the layer's type, as error messages say it.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Flatten { .. } => "flatten",
            LayerSpec::Reshape { .. } => "reshape",
            LayerSpec::Permute { .. } => "permute",
            LayerSpec::Relu {} => "relu",
            LayerSpec::Gelu { .. } => "gelu",
            LayerSpec::Tanh {} => "tanh",
            LayerSpec::Sigmoid {} => "sigmoid",
            LayerSpec::LeakyRelu { .. } => "leaky_relu",
            LayerSpec::Softmax { .. } => "softmax",
            LayerSpec::LogSoftmax { .. } => "log_softmax",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Conv1d(_) => "conv1d",
            LayerSpec::Conv2d(_) => "conv2d",
            LayerSpec::Maxpool1d(_) => "maxpool1d",
            LayerSpec::Maxpool2d(_) => "maxpool2d",
            LayerSpec::Avgpool1d(_) => "avgpool1d",
            LayerSpec::Avgpool2d(_) => "avgpool2d",
            LayerSpec::AdaptiveAvgpool1d { .. } => "adaptive_avgpool1d",
            LayerSpec::AdaptiveAvgpool2d { .. } => "adaptive_avgpool2d",
            LayerSpec::Batchnorm1d(_) => "batchnorm1d",
            LayerSpec::Batchnorm2d(_) => "batchnorm2d",
            LayerSpec::Layernorm { .. } => "layernorm",
            LayerSpec::Embedding { .. } => "embedding",
            LayerSpec::Add {} => "add",
            LayerSpec::Concat { .. } => "concat",
            LayerSpec::Mean { .. } => "mean",
            LayerSpec::TransformerEncoderLayer(_) => "transformer_encoder_layer",
            LayerSpec::PositionalEmbedding { .. } => "positional_embedding",
        }
    }

    /// Two or more inputs (`add`, `concat`) rather than one.
    pub fn joins(&self) -> bool {
        matches!(self, LayerSpec::Add {} | LayerSpec::Concat { .. })
    }
}

impl LayerSpec {
    /// Only an embedding reads the model's integer ids; every other layer computes on floats.
    pub fn takes_ids(&self) -> bool {
        matches!(self, LayerSpec::Embedding { .. })
    }

    /// The bounds the schema sets that serde's types do not, checked here because the trainer
    /// has no schema validator and Burn panics on a zero kernel, stride or width.
    pub fn check(&self) -> Result<(), String> {
        let kind = self.kind();
        let positive = |attr: &str, v: usize| match v {
            0 => Err(format!("{kind}'s {attr} must be at least 1")),
            _ => Ok(()),
        };
        let pair = |attr: &str, v: Pair| v.0.iter().try_for_each(|&n| positive(attr, n));
        let count = |attr: &str, n: usize| match n {
            1..=8 => Ok(()),
            _ => Err(format!("{kind}'s {attr} must hold 1 to 8 values")),
        };
        let sizes = |attr: &str, v: &[usize]| {
            count(attr, v.len())?;
            v.iter().try_for_each(|&n| positive(attr, n))
        };
        let between = |attr: &str, v: f64, lo: f64, hi: f64, hi_included: bool| {
            let fits = v >= lo && (v < hi || (hi_included && v == hi));
            let end = if hi_included { ']' } else { ')' };
            match fits {
                true => Ok(()),
                false => Err(format!("{kind}'s {attr} {v} is not in [{lo}, {hi}{end}")),
            }
        };
        let eps = |attr: &str, v: f64| match v > 0.0 && v <= 1e30 {
            true => Ok(()),
            false => Err(format!("{kind}'s {attr} {v} is not in (0, 1e30]")),
        };
        match self {
            LayerSpec::Reshape { shape } => count("shape", shape.len()),
            LayerSpec::Permute { dims } => count("dims", dims.len()),
            LayerSpec::Mean { dim, .. } => count("dim", dim.len()),
            LayerSpec::Dropout { p } => between("p", *p, 0.0, 1.0, false),
            LayerSpec::Linear {
                in_features,
                out_features,
                ..
            } => {
                positive("in_features", *in_features)?;
                positive("out_features", *out_features)
            }
            LayerSpec::Conv1d(c) | LayerSpec::Conv2d(c) => {
                positive("in_channels", c.in_channels)?;
                positive("out_channels", c.out_channels)?;
                pair("kernel_size", c.kernel_size)?;
                pair("stride", c.stride)
            }
            LayerSpec::Maxpool1d(p)
            | LayerSpec::Maxpool2d(p)
            | LayerSpec::Avgpool1d(p)
            | LayerSpec::Avgpool2d(p) => {
                pair("kernel_size", p.kernel_size)?;
                p.stride.map_or(Ok(()), |s| pair("stride", s))
            }
            LayerSpec::AdaptiveAvgpool1d { output_size }
            | LayerSpec::AdaptiveAvgpool2d { output_size } => pair("output_size", *output_size),
            LayerSpec::Batchnorm1d(b) | LayerSpec::Batchnorm2d(b) => {
                positive("num_features", b.num_features)?;
                eps("eps", b.eps)?;
                between("momentum", b.momentum, 0.0, 1.0, true)
            }
            LayerSpec::Layernorm {
                normalized_shape,
                eps: e,
                ..
            } => {
                sizes("normalized_shape", normalized_shape)?;
                eps("eps", *e)
            }
            LayerSpec::Embedding {
                num_embeddings,
                embedding_dim,
            } => {
                positive("num_embeddings", *num_embeddings)?;
                positive("embedding_dim", *embedding_dim)
            }
            LayerSpec::TransformerEncoderLayer(e) => {
                positive("d_model", e.d_model)?;
                positive("nhead", e.nhead)?;
                positive("dim_feedforward", e.dim_feedforward)?;
                between("dropout", e.dropout, 0.0, 1.0, false)?;
                eps("layer_norm_eps", e.layer_norm_eps)
            }
            LayerSpec::PositionalEmbedding { shape } => sizes("shape", shape),
            _ => Ok(()),
        }
    }
}
