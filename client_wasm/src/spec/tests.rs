use std::collections::BTreeSet;

use serde::Deserialize;

use super::*;

const MLP: &str = r#"{"name":"m","input_shape":[1,28,28],"num_classes":10,"layers":[
    {"type":"flatten"},{"type":"linear","in_features":784,"out_features":128},{"type":"relu"},
    {"type":"linear","in_features":128,"out_features":10}]}"#;

fn refused(json: &str) -> String {
    match ModelSpec::from_json(json) {
        Err(TrainerError::Spec(message)) => message,
        other => panic!("{json} gave {other:?}"),
    }
}

#[test]
fn mlp_names_and_shapes_are_pytorchs() {
    let spec = ModelSpec::from_json(MLP).unwrap();
    let names: Vec<_> = spec
        .wire_tensors()
        .unwrap()
        .into_iter()
        .map(|w| (w.name, w.shape))
        .collect();
    let want = [
        ("layers.1.weight", vec![128, 784]),
        ("layers.1.bias", vec![128]),
        ("layers.3.weight", vec![10, 128]),
        ("layers.3.bias", vec![10]),
    ]
    .map(|(n, s)| (n.to_string(), s));
    assert_eq!(names, want);
    assert_eq!(spec.nodes.len(), 4);
    assert_eq!(spec.nodes[2].inputs, vec![Some(1)]);
    assert_eq!(spec.nodes[0].inputs, vec![None]);
    assert_eq!(spec.nodes[3].module, "layers.3");
    assert_eq!(
        spec.loss,
        Loss::CrossEntropy {
            label_smoothing: 0.0
        }
    );
    assert!(!spec.input_ids);
    assert_eq!(spec.parameter_count(), 784 * 128 + 128 + 128 * 10 + 10);
    assert_eq!(spec.activation_len(), 784 + 128 + 128 + 10);
    assert_eq!(spec.input_len(), 784);
}

#[test]
fn mismatched_layers_are_refused_with_the_layer_index() {
    let bad = MLP.replace("\"in_features\":128", "\"in_features\":64");
    let err = refused(&bad);
    assert!(err.contains("layer 3") && err.contains("64"), "{err}");
}

#[test]
fn unknown_layer_types_and_fields_are_refused() {
    refused(&MLP.replace("relu", "lstm"));
    refused(&MLP.replace(r#"{"type":"relu"}"#, r#"{"type":"relu","inplace":true}"#));
    refused(&MLP.replace(r#""out_features":10}"#, r#""out_features":10,"groups":2}"#));
    refused(&MLP.replace(r#""num_classes""#, r#""extra":1,"num_classes""#));
    refused(&MLP.replace(r#"{"type":"relu"}"#, r#"{"type":"relu","name":3}"#));
    refused(&MLP.replace(r#"{"type":"relu"}"#, r#"{"type":"relu","name":"2x"}"#));
}

/// What the schema bounds and Burn would panic on: a zero size, stride or width, a rate of 1.
#[test]
fn values_out_of_the_schemas_bounds_are_refused() {
    let conv = |attrs: &str| {
        format!(
            r#"{{"name":"c","input_shape":[1,8,8],"num_classes":2,"layers":[{{"type":"conv2d",
            "in_channels":1,"out_channels":2,{attrs}}},{{"type":"flatten"}},
            {{"type":"linear","in_features":2,"out_features":2}}]}}"#
        )
    };
    for attrs in [
        r#""kernel_size":0"#,
        r#""kernel_size":[3,0]"#,
        r#""kernel_size":3,"stride":0"#,
        r#""kernel_size":3,"stride":[1,0]"#,
        r#""kernel_size":[3,3,3]"#,
        r#""kernel_size":-1"#,
    ] {
        refused(&conv(attrs));
    }
    for layer in [
        r#"{"type":"dropout","p":1.0}"#,
        r#"{"type":"dropout","p":-0.1}"#,
        r#"{"type":"linear","in_features":10,"out_features":0}"#,
        r#"{"type":"layernorm","normalized_shape":[]}"#,
        r#"{"type":"layernorm","normalized_shape":[10],"eps":0}"#,
        r#"{"type":"reshape","shape":[]}"#,
        r#"{"type":"transformer_encoder_layer","d_model":10,"nhead":0}"#,
    ] {
        let json = format!(
            r#"{{"name":"m","input_shape":[10],"num_classes":10,"layers":[{layer},
            {{"type":"linear","in_features":10,"out_features":10}}]}}"#
        );
        refused(&json);
    }
    let top = r#""layers":[{"type":"linear","in_features":4,"out_features":2}]"#;
    for head in [
        r#"{"name":"","input_shape":[4],"num_classes":2,"#,
        r#"{"name":"m","input_shape":[4,1,1,1],"num_classes":2,"#,
        r#"{"name":"m","input_shape":[4],"num_classes":2,"input_dtype":"int32","#,
        r#"{"name":"m","input_shape":[4],"num_classes":2,"loss":{"type":"mse","x":1},"#,
        r#"{"name":"m","input_shape":[4],"num_classes":2,"loss":{"type":"cross_entropy","label_smoothing":2},"#,
    ] {
        refused(&format!("{head}{top}}}"));
    }
}

#[test]
fn graph_faults_the_schema_leaves_to_the_walk_are_refused() {
    let relu2 = r#"{"name":"m","input_shape":[2],"num_classes":2,"layers":[
        {"type":"relu","name":"a"},{"type":"relu","inputs":["a","a"]}]}"#;
    assert_eq!(refused(relu2), "layer 1: relu takes one input, not 2");
    let own = r#"{"name":"m","input_shape":[2],"num_classes":2,"layers":[
        {"type":"relu","name":"a","inputs":["a"]}]}"#;
    assert_eq!(
        refused(own),
        r#"layer 0 takes "a", which no earlier layer is named"#
    );
    let module = r#"{"name":"m","input_shape":[2],"num_classes":2,"layers":[
        {"type":"linear","in_features":2,"out_features":2,"module":"a..b"}]}"#;
    assert_eq!(
        refused(module),
        r#"layer 0: module "a..b" is not a dotted path of names"#
    );
}

#[test]
fn encoder_layers_count_their_attention_in_activations() {
    let json = r#"{"name":"t","input_shape":[5,8],"num_classes":8,"layers":[
        {"type":"transformer_encoder_layer","d_model":8,"nhead":2,"dim_feedforward":16},
        {"type":"mean","dim":[1]}]}"#;
    let spec = ModelSpec::from_json(json).unwrap();
    let encoder = 5 * 8 + 2 * 5 * 5 * 2 + 5 * 16 * 2 + 5 * 8 * 6;
    assert_eq!(spec.activation_len(), encoder + 8);
}

#[test]
fn multiply_adds_count_matrix_products_convolutions_and_attention() {
    assert_eq!(
        ModelSpec::from_json(MLP).unwrap().multiply_adds(),
        784 * 128 + 128 * 10
    );
    // mnist-cnn: 12.27 M, so a training step's 6 FLOP per multiply-add, less the first
    // layer's unneeded input gradient, is the 72.4 MFLOP torch.utils.flop_counter counts.
    let cnn = include_str!("../../../protocol/models/mnist-cnn.json");
    let conv = 32 * 28 * 28 * 25 + 64 * 14 * 14 * 32 * 25;
    let cnn_macs = ModelSpec::from_json(cnn).unwrap().multiply_adds();
    assert_eq!(cnn_macs, conv + 3136 * 512 + 512 * 10);
    let json = r#"{"name":"t","input_shape":[5,8],"num_classes":8,"layers":[
        {"type":"transformer_encoder_layer","d_model":8,"nhead":2,"dim_feedforward":16},
        {"type":"mean","dim":[1]}]}"#;
    let projections = 5 * 4 * 8 * 8;
    let attention = 2 * 5 * 5 * 8;
    let feed_forward = 5 * 2 * 8 * 16;
    let encoder = projections + attention + feed_forward;
    assert_eq!(ModelSpec::from_json(json).unwrap().multiply_adds(), encoder);
}

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
    outputs: Option<Vec<Vec<usize>>>,
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

/// `protocol/vectors/specs.json` (v1 chains) and `graph-specs.json`, which the coordinator's
/// tests run too.
fn vectors() -> [Vectors; 2] {
    [
        include_str!("../../../protocol/vectors/specs.json"),
        include_str!("../../../protocol/vectors/graph-specs.json"),
    ]
    .map(|v| serde_json::from_str(v).unwrap())
}

#[test]
fn valid_vectors_have_pytorchs_parameters_and_outputs() {
    let files = vectors().map(|v| v.valid);
    assert!(files.iter().all(|cases| !cases.is_empty()));
    for case in files.into_iter().flatten() {
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
        let walk = spec.walk().unwrap();
        if let Some(outputs) = case.outputs {
            assert_eq!(walk.outputs, outputs, "{}", case.name);
        }
        for p in &walk.params {
            let module = &spec.nodes[p.node].module;
            let joined = format!("{module}.{}", p.local);
            assert!(p.name == joined || (p.local.is_empty() && p.name == *module));
        }
    }
}

#[test]
fn invalid_vectors_are_refused_with_the_shared_message() {
    let files = vectors().map(|v| v.invalid);
    assert!(files.iter().all(|cases| !cases.is_empty()));
    for case in files.into_iter().flatten() {
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

/// The schema's layer types are exactly those the graph vectors use, so a new layer type
/// cannot land without a shared vector for it; and every loss is exercised.
#[test]
fn graph_vectors_cover_every_layer_type_and_loss() {
    let schema: serde_json::Value = serde_json::from_str(include_str!(
        "../../../protocol/schemas/model-spec.schema.json"
    ))
    .unwrap();
    let types: BTreeSet<&str> = schema["properties"]["layers"]["items"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["properties"]["type"]["const"].as_str().unwrap())
        .collect();
    let [_, graph] = vectors();
    let specs: Vec<_> = graph
        .valid
        .iter()
        .map(|c| ModelSpec::from_json(&c.spec.to_string()).unwrap())
        .collect();
    let used: BTreeSet<&str> = specs
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.layer.kind()))
        .collect();
    assert_eq!(used, types);
    assert_eq!(types.len(), 29);
    let losses: std::collections::HashSet<_> = specs
        .iter()
        .map(|s| std::mem::discriminant(&s.loss))
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(specs.iter().any(|s| s.input_ids));
}
