//! Each layer type's shape rule, as `coordinator/models/layer_types.py` states it: the output
//! shape a layer gives its inputs, and its own parameters. Shapes are per example (no batch
//! dimension); a `dim` attribute counts as PyTorch's does, with 0 the batch. Error messages
//! are the Python ones word for word, since `protocol/vectors/graph-specs.json` checks both
//! languages against them; they say how a layer does not fit, and the walk says which layer.

use crate::layer_spec::{Encoder, LayerSpec};

mod spatial;

use spatial::{adaptive, batchnorm, conv, pool};

/// A parameter's name within its layer (`""` for a bare tensor) and its shape.
pub type OwnParam = (String, Vec<usize>);

/// A layer's output shape and its own parameters.
pub type Inferred = (Vec<usize>, Vec<OwnParam>);

/// The values a shape holds, or `None` where that does not fit a `usize` (Python's integers
/// never overflow, so Rust refuses such a spec rather than wrap).
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The layer's output shape and own parameters, given its inputs' shapes.
pub fn infer(layer: &LayerSpec, inputs: &[&[usize]]) -> Result<Inferred, String> {
    let Some(&x) = inputs.first() else {
        return Err(format!("{} has no input", layer.kind()));
    };
    let (out, params) = rule(layer, inputs, x)?;
    let mut shapes = std::iter::once(&out).chain(params.iter().map(|(_, s)| s));
    if let Some(shape) = shapes.find(|s| numel(s).is_none()) {
        return Err(format!("{} makes {shape:?}, too many values", layer.kind()));
    }
    Ok((out, params))
}

fn rule(layer: &LayerSpec, inputs: &[&[usize]], x: &[usize]) -> Result<Inferred, String> {
    let same = || Ok((x.to_vec(), Vec::new()));
    match layer {
        LayerSpec::Flatten { start_dim, end_dim } => flatten(x, *start_dim, *end_dim),
        LayerSpec::Reshape { shape } => reshape(x, shape),
        LayerSpec::Permute { dims } => permute(x, dims),
        LayerSpec::Relu {}
        | LayerSpec::Gelu { .. }
        | LayerSpec::Tanh {}
        | LayerSpec::Sigmoid {}
        | LayerSpec::LeakyRelu { .. }
        | LayerSpec::Dropout { .. } => same(),
        LayerSpec::Softmax { dim } | LayerSpec::LogSoftmax { dim } => {
            axis(*dim, x.len())?;
            same()
        }
        LayerSpec::Linear {
            in_features: i,
            out_features: o,
            bias,
        } => {
            if x.last() != Some(i) {
                return Err(match x.len() {
                    1 => format!("linear expects a flat input of {i}"),
                    _ => format!("linear expects [..., {i}]"),
                });
            }
            let out = [&x[..x.len() - 1], &[*o]].concat();
            Ok((out, weight_and_bias(vec![*o, *i], *o, *bias)))
        }
        LayerSpec::Conv1d(c) => conv(c, 1, x),
        LayerSpec::Conv2d(c) => conv(c, 2, x),
        LayerSpec::Maxpool1d(p) => pool("maxpool", 1, p, x),
        LayerSpec::Maxpool2d(p) => pool("maxpool", 2, p, x),
        LayerSpec::Avgpool1d(p) => pool("avgpool", 1, p, x),
        LayerSpec::Avgpool2d(p) => pool("avgpool", 2, p, x),
        LayerSpec::AdaptiveAvgpool1d { output_size } => adaptive(1, *output_size, x),
        LayerSpec::AdaptiveAvgpool2d { output_size } => adaptive(2, *output_size, x),
        LayerSpec::Batchnorm1d(b) => batchnorm(1, b, x),
        LayerSpec::Batchnorm2d(b) => batchnorm(2, b, x),
        LayerSpec::Layernorm {
            normalized_shape: norm,
            elementwise_affine: affine,
            bias,
            ..
        } => {
            if norm.len() > x.len() || x[x.len() - norm.len()..] != norm[..] {
                let sizes: Vec<_> = norm.iter().map(usize::to_string).collect();
                return Err(format!("layernorm expects [..., {}]", sizes.join(", ")));
            }
            let mut params = Vec::new();
            if *affine {
                params.push(("weight".to_string(), norm.clone()));
                if *bias {
                    params.push(("bias".to_string(), norm.clone()));
                }
            }
            Ok((x.to_vec(), params))
        }
        LayerSpec::Embedding {
            num_embeddings: n,
            embedding_dim: d,
        } => match x {
            [t] => Ok((vec![*t, *d], vec![("weight".to_string(), vec![*n, *d])])),
            _ => Err("embedding expects [T] ids".to_string()),
        },
        LayerSpec::Add {} => Ok((broadcast(inputs, "add")?, Vec::new())),
        LayerSpec::Concat { dim } => Ok((concat(inputs, *dim)?, Vec::new())),
        LayerSpec::Mean { dim, keepdim } => {
            let dims = dim
                .iter()
                .map(|&d| axis(d, x.len()))
                .collect::<Result<Vec<_>, _>>()?;
            let kept = x
                .iter()
                .enumerate()
                .filter_map(|(i, &n)| match dims.contains(&i) {
                    true => keepdim.then_some(1),
                    false => Some(n),
                });
            Ok((kept.collect(), Vec::new()))
        }
        LayerSpec::TransformerEncoderLayer(e) => encoder(e, x),
        LayerSpec::PositionalEmbedding { shape: table } => {
            let full = [&[1], x].concat();
            let fits = table.len() <= full.len()
                && table
                    .iter()
                    .rev()
                    .zip(full.iter().rev())
                    .all(|(&t, &n)| t == 1 || t == n);
            if !fits {
                return Err(format!(
                    "positional_embedding of shape {table:?} does not broadcast to {x:?}"
                ));
            }
            Ok((x.to_vec(), vec![(String::new(), table.clone())]))
        }
    }
}

/// A PyTorch `dim` of the batched tensor, as an index into the per-example shape.
fn axis(dim: i64, rank: usize) -> Result<usize, String> {
    let full = rank as i64 + 1;
    if !(-full..full).contains(&dim) {
        return Err(format!("dim {dim} is out of range for {full} dims"));
    }
    match dim.rem_euclid(full) {
        0 => Err("dim 0 is the batch: a layer may not mix examples".to_string()),
        d => Ok(d as usize - 1),
    }
}

fn weight_and_bias(weight: Vec<usize>, out: usize, bias: bool) -> Vec<OwnParam> {
    let mut params = vec![("weight".to_string(), weight)];
    if bias {
        params.push(("bias".to_string(), vec![out]));
    }
    params
}

fn flatten(x: &[usize], start: i64, end: i64) -> Result<Inferred, String> {
    let (lo, hi) = (axis(start, x.len())?, axis(end, x.len())?);
    if lo > hi {
        return Err(format!(
            "flatten's start_dim {start} is after its end_dim {end}"
        ));
    }
    // A sub-product of an input whose size was checked to fit, and every size is at least 1.
    let merged = x[lo..=hi].iter().product();
    Ok(([&x[..lo], &[merged], &x[hi + 1..]].concat(), Vec::new()))
}

fn reshape(x: &[usize], want: &[i64]) -> Result<Inferred, String> {
    let holes = want.iter().filter(|&&d| d == -1).count();
    if holes > 1 || want.iter().any(|&d| d < -1 || d == 0) {
        return Err(format!(
            "reshape's shape {want:?} may hold positive sizes and one -1"
        ));
    }
    let total = x.iter().product::<usize>() as u128;
    let cannot = || format!("reshape cannot make {want:?} of {total} values");
    let known = want
        .iter()
        .filter(|&&d| d != -1)
        .try_fold(1u128, |n, &d| n.checked_mul(d as u128));
    let hole = match known {
        Some(k) if holes == 1 && total.is_multiple_of(k) => total / k,
        Some(k) if holes == 0 && k == total => 0,
        _ => return Err(cannot()),
    };
    let sizes = want.iter().map(|&d| match d {
        -1 => hole,
        d => d as u128,
    });
    // Every size divides `total`, which is a `usize`, so none can fail to convert.
    let out = sizes.map(|d| usize::try_from(d).map_err(|_| cannot()));
    Ok((out.collect::<Result<_, _>>()?, Vec::new()))
}

fn permute(x: &[usize], dims: &[usize]) -> Result<Inferred, String> {
    let mut sorted = dims.to_vec();
    sorted.sort_unstable();
    if !sorted.iter().copied().eq(0..=x.len()) || dims.first() != Some(&0) {
        return Err(format!(
            "permute's dims {dims:?} must reorder 0..{} and keep the batch (0) first",
            x.len()
        ));
    }
    Ok((dims[1..].iter().map(|&d| x[d - 1]).collect(), Vec::new()))
}

/// Ranks must agree; per dimension the sizes other than 1 must agree (PyTorch broadcasting
/// without the implicit leading 1s, which the Python refuses too).
fn broadcast(shapes: &[&[usize]], what: &str) -> Result<Vec<usize>, String> {
    let rank = shapes[0].len();
    if shapes.iter().any(|s| s.len() != rank) {
        return Err(format!("{what} expects inputs of one rank"));
    }
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut big = shapes.iter().map(|s| s[i]).filter(|&n| n != 1);
        let first = big.next();
        if let Some(f) = first
            && big.any(|n| n != f)
        {
            let shown: Vec<_> = shapes.iter().map(|s| format!("{s:?}")).collect();
            return Err(format!("{what} cannot broadcast {}", shown.join(" and ")));
        }
        out.push(first.unwrap_or(1));
    }
    Ok(out)
}

fn concat(shapes: &[&[usize]], dim: i64) -> Result<Vec<usize>, String> {
    let rank = shapes[0].len();
    if shapes.iter().any(|s| s.len() != rank) {
        return Err("concat expects inputs of one rank".to_string());
    }
    let d = axis(dim, rank)?;
    let rest = |s: &[usize]| [&s[..d], &s[d + 1..]].concat();
    if shapes.iter().any(|s| rest(s) != rest(shapes[0])) {
        return Err(format!(
            "concat along dim {dim} expects equal sizes elsewhere"
        ));
    }
    let joined = shapes.iter().try_fold(0usize, |n, s| n.checked_add(s[d]));
    let mut out = shapes[0].to_vec();
    out[d] = joined.ok_or("concat's output is too large")?;
    Ok(out)
}

fn encoder(e: &Encoder, x: &[usize]) -> Result<Inferred, String> {
    let (d, ff) = (e.d_model, e.dim_feedforward);
    if x.len() != 2 || x[1] != d {
        return Err(format!(
            "transformer_encoder_layer expects [T, {d}] (batch first)"
        ));
    }
    if d.checked_rem(e.nhead) != Some(0) {
        return Err(format!(
            "transformer_encoder_layer's d_model {d} is not a multiple of nhead {}",
            e.nhead
        ));
    }
    let d3 = d
        .checked_mul(3)
        .ok_or("transformer_encoder_layer's d_model is too large")?;
    let mut params: Vec<OwnParam> = [
        ("self_attn.in_proj_weight", vec![d3, d]),
        ("self_attn.in_proj_bias", vec![d3]),
        ("self_attn.out_proj.weight", vec![d, d]),
        ("self_attn.out_proj.bias", vec![d]),
        ("linear1.weight", vec![ff, d]),
        ("linear1.bias", vec![ff]),
        ("linear2.weight", vec![d, ff]),
        ("linear2.bias", vec![d]),
    ]
    .map(|(n, s)| (n.to_string(), s))
    .to_vec();
    for norm in ["norm1", "norm2"] {
        for p in ["weight", "bias"] {
            params.push((format!("{norm}.{p}"), vec![d]));
        }
    }
    Ok((x.to_vec(), params))
}
