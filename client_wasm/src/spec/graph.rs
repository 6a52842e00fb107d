//! The spec's layers read as a graph (names resolved, dangling and unused layers refused) and
//! walked, as `coordinator/models/graph.py` does, down to its messages and the order in which
//! it finds faults: the first fault the Python reports is the one reported here.

use std::collections::HashMap;

use super::{LayerParam, ModelSpec, Node, RawLayer, Walk, refuse};
use crate::error::{Result, TrainerError};
use crate::shapes::{self, numel};

const MODEL_INPUT: &str = "input";
/// Dims per example, without the batch: what the trainer's tensors hold.
const MAX_RANK: usize = 4;

/// PyTorch's module path syntax, which `state_dict` names are made of.
fn is_path(s: &str) -> bool {
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut parts = s.split('.');
    let head = parts.next().unwrap_or_default();
    word(head) && !head.starts_with(|c: char| c.is_ascii_digit()) && parts.all(word)
}

pub(super) fn nodes(layers: Vec<RawLayer>) -> Result<Vec<Node>> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut used = vec![false; layers.len()];
    let mut nodes = Vec::with_capacity(layers.len());
    for (i, raw) in layers.into_iter().enumerate() {
        if let Some(name) = &raw.name {
            if name == MODEL_INPUT {
                return refuse(format!(
                    "layer {i} is named \"{name}\", which names the model's input already"
                ));
            }
            if let Some(j) = names.get(name) {
                return refuse(format!(
                    "layer {i} is named \"{name}\", which names layer {j} already"
                ));
            }
        }
        let inputs = match &raw.inputs {
            None => vec![i.checked_sub(1)],
            Some(refs) => refs
                .iter()
                .map(|r| match names.get(r) {
                    _ if r == MODEL_INPUT => Ok(None),
                    Some(&j) => Ok(Some(j)),
                    // The Python registers a layer's name before reading its inputs, so it
                    // would take a layer naming itself and then fail walking it; refused here.
                    None => refuse(format!(
                        "layer {i} takes \"{r}\", which no earlier layer is named"
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
        };
        if let Some(name) = &raw.name {
            names.insert(name.clone(), i);
        }
        let kind = raw.layer.kind();
        if raw.layer.joins() && inputs.len() < 2 {
            return refuse(format!("layer {i}: {kind} takes two or more inputs"));
        }
        if !raw.layer.joins() && inputs.len() != 1 {
            return refuse(format!(
                "layer {i}: {kind} takes one input, not {}",
                inputs.len()
            ));
        }
        let module = raw.module.unwrap_or_else(|| format!("layers.{i}"));
        if !is_path(&module) {
            return refuse(format!(
                "layer {i}: module \"{module}\" is not a dotted path of names"
            ));
        }
        for j in inputs.iter().flatten() {
            used[*j] = true;
        }
        nodes.push(Node {
            index: i,
            name: raw.name,
            inputs,
            module,
            layer: raw.layer,
        });
    }
    if let Some(unused) = used
        .iter()
        .take(nodes.len().saturating_sub(1))
        .position(|u| !u)
    {
        return refuse(format!(
            "layer {unused}'s output is never used: only the last layer's is the model's"
        ));
    }
    Ok(nodes)
}

/// How errors name a layer: its index, its name if it has one, and what it was given.
fn place(node: &Node, shapes: &[&[usize]]) -> String {
    let label = match &node.name {
        Some(name) if !name.is_empty() => format!("layer {} \"{name}\"", node.index),
        _ => format!("layer {}", node.index),
    };
    let given: Vec<_> = shapes.iter().map(|s| format!("{s:?}")).collect();
    let plural = if shapes.len() > 1 { "s" } else { "" };
    format!("{label} with input shape{plural} {}", given.join(" and "))
}

pub(super) fn walk(spec: &ModelSpec) -> Result<Walk> {
    if numel(&spec.input_shape).is_none() {
        return refuse(format!(
            "input_shape {:?} holds too many values",
            spec.input_shape
        ));
    }
    let mut outputs: Vec<Vec<usize>> = Vec::with_capacity(spec.nodes.len());
    let mut params = Vec::new();
    let mut owners: Vec<(&str, usize)> = Vec::new();
    for node in &spec.nodes {
        // `nodes` guarantees this; a spec built by hand might not, and must not panic.
        let earlier = |j: &Option<usize>| j.is_none_or(|j| j < outputs.len());
        if node.inputs.is_empty() || !node.inputs.iter().all(earlier) {
            return refuse(format!(
                "layer {} takes no earlier layer's output",
                node.index
            ));
        }
        let shapes: Vec<&[usize]> = node
            .inputs
            .iter()
            .map(|j| j.map_or(spec.input_shape.as_slice(), |j| outputs[j].as_slice()))
            .collect();
        // Only the model's input can be ids: every layer outputs floats.
        let ids: Vec<bool> = node
            .inputs
            .iter()
            .map(|j| j.is_none() && spec.input_ids)
            .collect();
        let all_ids = ids.iter().all(|&b| b);
        if node.layer.takes_ids() != all_ids || (ids.contains(&true) && !all_ids) {
            let want = match node.layer.takes_ids() {
                true => "integer ids (input_dtype int64)",
                false => "floats, not the ids an embedding takes",
            };
            let kind = node.layer.kind();
            return refuse(format!("{}: {kind} expects {want}", place(node, &shapes)));
        }
        let (shape, own) = shapes::infer(&node.layer, &shapes)
            .map_err(|e| TrainerError::Spec(format!("{}: {e}", place(node, &shapes))))?;
        if !(1..=MAX_RANK).contains(&shape.len()) {
            return refuse(format!(
                "{}: {} would make {} dims per example; models keep 1 to {MAX_RANK}",
                place(node, &shapes),
                node.layer.kind(),
                shape.len()
            ));
        }
        if !own.is_empty() {
            claim(node, &mut owners)?;
        }
        for (local, param_shape) in own {
            let name = match local.as_str() {
                "" => node.module.clone(),
                _ => format!("{}.{local}", node.module),
            };
            params.push(LayerParam {
                node: node.index,
                local,
                name,
                shape: param_shape,
            });
        }
        outputs.push(shape);
    }
    Ok(Walk {
        outputs,
        params: state_dict_order(params),
    })
}

/// A module path holds one layer's parameters: no sharing, and no nesting inside another's,
/// which would make one layer's tensors another's submodule in PyTorch.
fn claim<'a>(node: &'a Node, owners: &mut Vec<(&'a str, usize)>) -> Result<()> {
    let path = node.module.as_str();
    let nested = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.'))
    };
    if let Some((other, index)) = owners
        .iter()
        .find(|(other, _)| *other == path || nested(path, other) || nested(other, path))
    {
        return refuse(format!(
            "layer {} puts its parameters at \"{path}\", which clashes with layer {index} at \"{other}\"",
            node.index
        ));
    }
    owners.push((path, node.index));
    Ok(())
}

/// A dotted name and every module path above it, outermost first: `a`, `a.b`, `a.b.c`.
fn prefixes(name: &str) -> Vec<&str> {
    let dots = name.match_indices('.').map(|(i, _)| &name[..i]);
    dots.chain(std::iter::once(name)).collect()
}

/// PyTorch's `state_dict` order: a module's own tensors, then its children's, each in the
/// order first registered, which for a built spec is the order the walk met them. This is
/// why a positional embedding directly on the root comes before every layer's weights.
fn state_dict_order(params: Vec<LayerParam>) -> Vec<LayerParam> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for p in &params {
        for prefix in prefixes(&p.name) {
            let next = seen.len();
            seen.entry(prefix).or_insert(next);
        }
    }
    let keys: Vec<Vec<(u8, usize)>> = params
        .iter()
        .map(|p| {
            let path = prefixes(&p.name);
            let own = path.len() - 1;
            let key = path.iter().enumerate();
            key.map(|(k, q)| (u8::from(k != own), seen[q])).collect()
        })
        .collect();
    let mut keyed: Vec<_> = keys.into_iter().zip(params).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, p)| p).collect()
}
