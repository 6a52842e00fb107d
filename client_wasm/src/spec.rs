//! The protocol's JSON layer spec (`protocol/schemas/model-spec.schema.json`), parsed and
//! checked the same way the coordinator's `coordinator/models/spec.py` does.

use serde::Deserialize;

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    // Braces, not unit variants: serde ignores unknown fields of an internally tagged unit
    // variant, and `{"type": "relu", "inplace": true}` must be refused as the schema refuses it.
    Flatten {},
    Relu {},
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Maxpool2d {
        kernel_size: usize,
        stride: Option<usize>,
    },
    Batchnorm2d {
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    Dropout {
        p: f64,
    },
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    pub layers: Vec<LayerSpec>,
}

/// A tensor the wire carries: PyTorch name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct WireTensor {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ModelSpec {
    pub fn from_json(json: &str) -> Result<Self> {
        let spec: ModelSpec =
            serde_json::from_str(json).map_err(|e| TrainerError::Spec(e.to_string()))?;
        spec.wire_tensors()?;
        Ok(spec)
    }

    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// The float tensors the wire carries, in state_dict order.
    pub fn wire_tensors(&self) -> Result<Vec<WireTensor>> {
        self.walk().map(|(tensors, _)| tensors)
    }

    /// Values in the wire tensors (running statistics included).
    pub fn parameter_count(&self) -> usize {
        self.wire_tensors()
            .map(|t| t.iter().map(|w| w.shape.iter().product::<usize>()).sum())
            .unwrap_or(0)
    }

    /// Values every layer outputs for one example, summed: what a forward pass keeps.
    pub fn activation_len(&self) -> usize {
        self.walk().map(|(_, len)| len).unwrap_or(0)
    }

    /// Walk the layers checking each fits its input: the wire tensors, and the summed size
    /// of every layer's output for one example.
    fn walk(&self) -> Result<(Vec<WireTensor>, usize)> {
        if self.input_shape.is_empty()
            || self.input_shape.len() > 3
            || self.input_shape.contains(&0)
        {
            return Err(TrainerError::Spec(format!(
                "input_shape {:?} must have 1 to 3 positive dims",
                self.input_shape
            )));
        }
        if self.layers.is_empty() {
            return Err(TrainerError::Spec(
                "a model needs at least one layer".into(),
            ));
        }
        let mut shape = self.input_shape.clone();
        let mut activations = 0;
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>| out.push(WireTensor { name, shape });
        for (i, layer) in self.layers.iter().enumerate() {
            let at = |msg: String| {
                TrainerError::Spec(format!("layer {i} with input shape {shape:?}: {msg}"))
            };
            match *layer {
                LayerSpec::Flatten {} => shape = vec![shape.iter().product()],
                LayerSpec::Relu {} | LayerSpec::Dropout { .. } => {}
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    if shape != [in_features] {
                        return Err(at(format!("linear expects a flat input of {in_features}")));
                    }
                    add(
                        format!("layers.{i}.weight"),
                        vec![out_features, in_features],
                    );
                    if bias {
                        add(format!("layers.{i}.bias"), vec![out_features]);
                    }
                    shape = vec![out_features];
                }
                LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size: k,
                    stride: s,
                    padding: p,
                    bias,
                } => {
                    if shape.len() != 3 || shape[0] != in_channels {
                        return Err(at(format!("conv2d expects [{in_channels}, H, W]")));
                    }
                    if s == 0 {
                        return Err(at("conv2d stride must be at least 1".into()));
                    }
                    if shape[1] + 2 * p < k || shape[2] + 2 * p < k {
                        return Err(at(format!("conv2d kernel {k} does not fit")));
                    }
                    add(
                        format!("layers.{i}.weight"),
                        vec![out_channels, in_channels, k, k],
                    );
                    if bias {
                        add(format!("layers.{i}.bias"), vec![out_channels]);
                    }
                    shape = vec![
                        out_channels,
                        (shape[1] + 2 * p - k) / s + 1,
                        (shape[2] + 2 * p - k) / s + 1,
                    ];
                }
                LayerSpec::Maxpool2d {
                    kernel_size: k,
                    stride,
                } => {
                    let s = stride.unwrap_or(k);
                    if s == 0 {
                        return Err(at("maxpool2d stride must be at least 1".into()));
                    }
                    if shape.len() != 3 || shape[1] < k || shape[2] < k {
                        return Err(at(format!("maxpool2d expects [C, H, W] with H, W >= {k}")));
                    }
                    shape = vec![shape[0], (shape[1] - k) / s + 1, (shape[2] - k) / s + 1];
                }
                LayerSpec::Batchnorm2d {
                    num_features: n, ..
                } => {
                    if shape.len() != 3 || shape[0] != n {
                        return Err(at(format!("batchnorm2d expects [{n}, H, W]")));
                    }
                    for p in ["weight", "bias", "running_mean", "running_var"] {
                        add(format!("layers.{i}.{p}"), vec![n]);
                    }
                }
            }
            activations += shape.iter().product::<usize>();
        }
        if shape != [self.num_classes] {
            return Err(TrainerError::Spec(format!(
                "model \"{}\" ends with shape {shape:?}, expected [{}]",
                self.name, self.num_classes
            )));
        }
        Ok((out, activations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = r#"{"name":"m","input_shape":[1,28,28],"num_classes":10,"layers":[
        {"type":"flatten"},{"type":"linear","in_features":784,"out_features":128},{"type":"relu"},
        {"type":"linear","in_features":128,"out_features":10}]}"#;

    #[test]
    fn mlp_names_and_shapes_are_pytorchs() {
        let t = ModelSpec::from_json(MLP).unwrap().wire_tensors().unwrap();
        let names: Vec<_> = t
            .iter()
            .map(|w| (w.name.as_str(), w.shape.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("layers.1.weight", vec![128, 784]),
                ("layers.1.bias", vec![128]),
                ("layers.3.weight", vec![10, 128]),
                ("layers.3.bias", vec![10])
            ]
        );
    }

    #[test]
    fn mismatched_layers_are_refused_with_the_layer_index() {
        let bad = MLP.replace("\"in_features\":128", "\"in_features\":64");
        let err = ModelSpec::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("layer 3") && err.contains("64"), "{err}");
    }

    /// `protocol/vectors/specs.json`, which the coordinator's tests run too.
    #[derive(Deserialize)]
    struct Vectors {
        valid: Vec<Valid>,
        invalid: Vec<Invalid>,
    }

    #[derive(Deserialize)]
    struct Valid {
        name: String,
        spec: serde_json::Value,
        parameters: Vec<Parameter>,
    }

    #[derive(Deserialize)]
    struct Parameter {
        name: String,
        shape: Vec<usize>,
    }

    #[derive(Deserialize)]
    struct Invalid {
        name: String,
        spec: serde_json::Value,
        kind: String,
        message: Option<String>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../protocol/vectors/specs.json")).unwrap()
    }

    #[test]
    fn valid_vectors_have_pytorchs_parameters_in_order() {
        for case in vectors().valid {
            let spec = ModelSpec::from_json(&case.spec.to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let got: Vec<_> = spec
                .wire_tensors()
                .unwrap()
                .into_iter()
                .map(|t| (t.name, t.shape))
                .collect();
            let want: Vec<_> = case
                .parameters
                .into_iter()
                .map(|p| (p.name, p.shape))
                .collect();
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn invalid_vectors_are_refused_with_the_shared_message() {
        for case in vectors().invalid {
            let err = ModelSpec::from_json(&case.spec.to_string())
                .expect_err(&format!("{} was accepted", case.name));
            match (case.kind.as_str(), case.message) {
                ("shape", Some(message)) => {
                    assert_eq!(err, TrainerError::Spec(message), "{}", case.name)
                }
                ("schema", None) => {
                    assert!(matches!(err, TrainerError::Spec(_)), "{}", case.name)
                }
                (kind, _) => panic!("{}: malformed vector of kind {kind}", case.name),
            }
        }
    }

    #[test]
    fn unknown_layer_types_are_refused() {
        let bad = MLP.replace("relu", "softmax");
        assert!(matches!(
            ModelSpec::from_json(&bad),
            Err(TrainerError::Spec(_))
        ));
    }
}
