//! The protocol's JSON model spec (`protocol/schemas/model-spec.schema.json`): layers that form
//! a small graph, parsed and checked as the coordinator's `coordinator/models/spec.py` and
//! `graph.py` do, with the same error messages (`protocol/vectors/*.json` hold both to them).
//!
//! A layer without `inputs` takes the previous layer's output, so a v1 chain is a graph too.
//! Each layer's parameters live under its `module` path, PyTorch's `state_dict` prefix.
//! Rust has no schema validator here, so serde's types and `LayerSpec::check` stand in for it:
//! whatever the schema refuses is refused, though with messages of our own.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Result, TrainerError};
pub use crate::layer_spec::LayerSpec;

mod graph;
#[cfg(test)]
mod tests;

#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    CrossEntropy { label_smoothing: f64 },
    Mse,
    BceWithLogits,
}

/// One layer and its place in the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub index: usize,
    pub name: Option<String>,
    /// `None` is the model's input; `Some(j)` the output of layer `j`, always before this one.
    pub inputs: Vec<Option<usize>>,
    /// The `state_dict` prefix of the layer's parameters: `layers.<index>` unless named.
    pub module: String,
    pub layer: LayerSpec,
}

/// A tensor the wire carries: PyTorch name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct WireTensor {
    pub name: String,
    pub shape: Vec<usize>,
}

/// One parameter of one layer: `local` is its name within the layer ("weight",
/// "self_attn.in_proj_weight", "" for a positional embedding whose full name is the module
/// path), `name` the full state_dict name.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParam {
    pub node: usize,
    pub local: String,
    pub name: String,
    pub shape: Vec<usize>,
}

/// What walking the graph found.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// Each layer's per-example output shape (no batch dimension).
    pub outputs: Vec<Vec<usize>>,
    /// In PyTorch `state_dict` order, which is the wire's.
    pub params: Vec<LayerParam>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    /// `input_dtype` is `int64`: token ids for an embedding, not floats.
    pub input_ids: bool,
    pub loss: Loss,
    pub nodes: Vec<Node>,
}

const MAX_LAYERS: usize = 256;
const MAX_JOINED: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    input_shape: Vec<usize>,
    num_classes: usize,
    #[serde(default)]
    input_dtype: Dtype,
    #[serde(default = "default_loss")]
    loss: RawLoss,
    layers: Vec<Map<String, Value>>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    #[default]
    Float32,
    Int64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawLoss {
    CrossEntropy {
        #[serde(default)]
        label_smoothing: f64,
    },
    Mse {},
    BceWithLogits {},
}

fn default_loss() -> RawLoss {
    RawLoss::CrossEntropy {
        label_smoothing: 0.0,
    }
}

/// A layer as written, before its names are resolved to indices.
struct RawLayer {
    name: Option<String>,
    inputs: Option<Vec<String>>,
    module: Option<String>,
    layer: LayerSpec,
}

fn refuse<T>(message: impl Into<String>) -> Result<T> {
    Err(TrainerError::Spec(message.into()))
}

/// The schema's pattern for layer names and the names in `inputs`.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first && s.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn string(i: usize, key: &str, v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        _ => refuse(format!("layer {i}: {key} must be a string")),
    }
}

impl RawLayer {
    fn parse(i: usize, mut map: Map<String, Value>) -> Result<Self> {
        let name = map
            .remove("name")
            .map(|v| string(i, "name", v))
            .transpose()?;
        let inputs = match map.remove("inputs") {
            None => None,
            Some(Value::Array(refs)) => Some(
                refs.into_iter()
                    .map(|r| string(i, "each of inputs", r))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(_) => return refuse(format!("layer {i}: inputs must be a list of names")),
        };
        let module = map
            .remove("module")
            .map(|v| string(i, "module", v))
            .transpose()?;
        let layer: LayerSpec = serde_json::from_value(Value::Object(map))
            .map_err(|e| TrainerError::Spec(format!("layer {i}: {e}")))?;
        layer
            .check()
            .or_else(|e| refuse(format!("layer {i}: {e}")))?;
        if let Some(bad) = name
            .iter()
            .chain(inputs.iter().flatten())
            .find(|n| !is_name(n))
        {
            return refuse(format!(
                "layer {i}: \"{bad}\" is not a name (a letter or _, then letters, digits, _ . -)"
            ));
        }
        if inputs.as_ref().is_some_and(|r| r.len() > MAX_JOINED) {
            return refuse(format!("layer {i} takes more than {MAX_JOINED} inputs"));
        }
        if module.as_ref().is_some_and(|m| m.len() > 256) {
            return refuse(format!("layer {i}: module is longer than 256 characters"));
        }
        Ok(RawLayer {
            name,
            inputs,
            module,
            layer,
        })
    }
}

impl ModelSpec {
    /// Parse and check a spec: its fields, its graph, and that every layer fits its input.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawSpec =
            serde_json::from_str(json).map_err(|e| TrainerError::Spec(e.to_string()))?;
        if raw.name.is_empty() || raw.name.chars().count() > 128 {
            return refuse("a model's name must be 1 to 128 characters");
        }
        let shape = &raw.input_shape;
        if shape.is_empty() || shape.len() > 3 || shape.contains(&0) {
            return refuse(format!(
                "input_shape {shape:?} must have 1 to 3 positive dims"
            ));
        }
        if raw.num_classes == 0 {
            return refuse("num_classes must be at least 1");
        }
        if raw.layers.is_empty() || raw.layers.len() > MAX_LAYERS {
            return refuse(format!("a model needs 1 to {MAX_LAYERS} layers"));
        }
        let loss = match raw.loss {
            RawLoss::CrossEntropy { label_smoothing } if (0.0..=1.0).contains(&label_smoothing) => {
                Loss::CrossEntropy { label_smoothing }
            }
            RawLoss::CrossEntropy { label_smoothing } => {
                return refuse(format!(
                    "label_smoothing {label_smoothing} is not in [0, 1]"
                ));
            }
            RawLoss::Mse {} => Loss::Mse,
            RawLoss::BceWithLogits {} => Loss::BceWithLogits,
        };
        // Every layer is read before the graph is, as the coordinator validates the schema
        // first: a spec with both kinds of fault gets the same kind of refusal in both.
        let layers = raw
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, map)| RawLayer::parse(i, map))
            .collect::<Result<Vec<_>>>()?;
        let spec = ModelSpec {
            nodes: graph::nodes(layers)?,
            name: raw.name,
            input_shape: raw.input_shape,
            num_classes: raw.num_classes,
            input_ids: raw.input_dtype == Dtype::Int64,
            loss,
        };
        let walk = spec.walk()?;
        let last = walk.outputs.last().map(Vec::as_slice).unwrap_or_default();
        if last != [spec.num_classes] {
            return refuse(format!(
                "model \"{}\" ends with shape {last:?}, expected [{}]",
                spec.name, spec.num_classes
            ));
        }
        if matches!(spec.loss, Loss::CrossEntropy { .. }) && spec.num_classes < 2 {
            return refuse(format!(
                "model \"{}\": cross_entropy needs at least 2 classes",
                spec.name
            ));
        }
        if spec.loss == Loss::Mse && spec.num_classes != 1 {
            return refuse(format!(
                "model \"{}\": mse regresses one target per example, so num_classes must be 1",
                spec.name
            ));
        }
        Ok(spec)
    }

    /// Each layer's output shape and the parameters, checking every layer fits its inputs.
    pub fn walk(&self) -> Result<Walk> {
        graph::walk(self)
    }

    /// The float tensors the wire carries, in state_dict order.
    pub fn wire_tensors(&self) -> Result<Vec<WireTensor>> {
        let params = self.walk()?.params;
        Ok(params
            .into_iter()
            .map(|p| WireTensor {
                name: p.name,
                shape: p.shape,
            })
            .collect())
    }

    /// Values in the wire tensors (running statistics included).
    pub fn parameter_count(&self) -> usize {
        self.walk().map_or(0, |w| {
            w.params
                .iter()
                .map(|p| p.shape.iter().product::<usize>())
                .fold(0, usize::saturating_add)
        })
    }

    /// Values one example's forward pass keeps: every layer's output, plus what an encoder
    /// layer holds inside (attention scores and probabilities, the feed-forward hidden layer,
    /// and its temporaries), which dwarfs its output and must count for memory estimates.
    pub fn activation_len(&self) -> usize {
        let Ok(walk) = self.walk() else { return 0 };
        let mut total = 0usize;
        for (node, out) in self.nodes.iter().zip(&walk.outputs) {
            total = total.saturating_add(out.iter().product());
            if let (LayerSpec::TransformerEncoderLayer(e), [t, d]) = (&node.layer, out.as_slice()) {
                let scores = e.nhead.saturating_mul(t.saturating_mul(*t));
                let hidden = t.saturating_mul(e.dim_feedforward);
                let temporaries = t.saturating_mul(*d).saturating_mul(6);
                total = [scores, scores, hidden, hidden, temporaries]
                    .into_iter()
                    .fold(total, usize::saturating_add);
            }
        }
        total
    }

    /// Multiply-adds of one example's forward pass in its matrix products and convolutions,
    /// which dominate a step's work (the rest is element-wise); 0 for a spec that does not walk.
    pub fn multiply_adds(&self) -> usize {
        let Ok(walk) = self.walk() else { return 0 };
        let mut total = 0usize;
        for (node, out) in self.nodes.iter().zip(&walk.outputs) {
            let values: usize = out.iter().product();
            let per_value = match &node.layer {
                LayerSpec::Linear { in_features, .. } => *in_features,
                LayerSpec::Conv1d(c) | LayerSpec::Conv2d(c) => {
                    let taps: usize = c.kernel_size.take(out.len() - 1).iter().product();
                    c.in_channels.saturating_mul(taps)
                }
                // Per token: the four projections, the feed-forward pair, scores and mixing.
                LayerSpec::TransformerEncoderLayer(e) => {
                    let tokens = out.first().copied().unwrap_or(1);
                    4 * e.d_model + 2 * e.dim_feedforward + 2 * tokens
                }
                _ => 0,
            };
            total = total.saturating_add(values.saturating_mul(per_value));
        }
        total
    }

    /// Values in one example's input.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}
