//! The layers that slide or average over a grid (`[C, L]` or `[C, H, W]`): convolutions,
//! pools and batch norms, whose rules share the window arithmetic.

use super::{Inferred, weight_and_bias};
use crate::layer_spec::{BatchNorm, Conv, Pair, Pool};

/// How `[3, 3]` reads in a message: `3` where all sizes agree, as the Python prints it.
fn sizes(ks: &[usize]) -> String {
    match ks.iter().all(|&k| k == ks[0]) {
        true => ks[0].to_string(),
        false => format!("{ks:?}"),
    }
}

/// Sliding-window output length, in u128 so that a huge padding cannot wrap a wasm32 usize.
fn window(n: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let covered = n as u128 + 2 * pad as u128 - k as u128;
    usize::try_from(covered / stride.max(1) as u128 + 1).ok()
}

fn windows(
    what: &str,
    x: &[usize],
    ks: &[usize],
    st: &[usize],
    pd: &[usize],
) -> Result<Vec<usize>, String> {
    let mut out = vec![x[0]];
    for (((&n, &k), &s), &p) in x[1..].iter().zip(ks).zip(st).zip(pd) {
        out.push(window(n, k, s, p).ok_or_else(|| format!("{what}'s output is too large"))?);
    }
    Ok(out)
}

/// Whether a kernel fits some padded spatial size (`n + 2p < k` in any dimension fails).
fn kernel_fits(x: &[usize], ks: &[usize], pd: &[usize]) -> bool {
    x.iter()
        .zip(ks)
        .zip(pd)
        .all(|((&n, &k), &p)| n as u128 + 2 * p as u128 >= k as u128)
}

fn grid(dims: usize) -> &'static str {
    if dims == 1 { "L" } else { "H, W" }
}

pub(super) fn conv(c: &Conv, dims: usize, x: &[usize]) -> Result<Inferred, String> {
    let (ks, st, pd) = (
        c.kernel_size.take(dims),
        c.stride.take(dims),
        c.padding.take(dims),
    );
    let what = format!("conv{dims}d");
    if x.len() != dims + 1 || x[0] != c.in_channels {
        return Err(format!(
            "{what} expects [{}, {}]",
            c.in_channels,
            grid(dims)
        ));
    }
    if !kernel_fits(&x[1..], ks, pd) {
        return Err(format!("{what} kernel {} does not fit", sizes(ks)));
    }
    let mut out = windows(&what, x, ks, st, pd)?;
    out[0] = c.out_channels;
    let weight = [&[c.out_channels, c.in_channels], ks].concat();
    Ok((out, weight_and_bias(weight, c.out_channels, c.bias)))
}

pub(super) fn pool(kind: &str, dims: usize, p: &Pool, x: &[usize]) -> Result<Inferred, String> {
    let ks = p.kernel_size.take(dims);
    let st = p.stride.unwrap_or(p.kernel_size);
    let pd = p.padding.take(dims);
    if ks
        .iter()
        .zip(pd)
        .any(|(&k, &pad)| 2 * pad as u128 > k as u128)
    {
        return Err(format!(
            "{kind}{dims}d padding may be at most half the kernel"
        ));
    }
    if x.len() != dims + 1 || !kernel_fits(&x[1..], ks, pd) {
        let shape = if dims == 1 {
            "[C, L] with L"
        } else {
            "[C, H, W] with H, W"
        };
        return Err(format!("{kind}{dims}d expects {shape} >= {}", sizes(ks)));
    }
    let out = windows(&format!("{kind}{dims}d"), x, ks, st.take(dims), pd)?;
    Ok((out, Vec::new()))
}

pub(super) fn adaptive(dims: usize, size: Pair, x: &[usize]) -> Result<Inferred, String> {
    if x.len() != dims + 1 {
        return Err(format!(
            "adaptive_avgpool{dims}d expects [C, {}]",
            grid(dims)
        ));
    }
    Ok(([&[x[0]], size.take(dims)].concat(), Vec::new()))
}

pub(super) fn batchnorm(dims: usize, b: &BatchNorm, x: &[usize]) -> Result<Inferred, String> {
    let n = b.num_features;
    let rank_fits = if dims == 1 {
        matches!(x.len(), 1 | 2)
    } else {
        x.len() == 3
    };
    if !rank_fits || x[0] != n {
        return Err(match dims {
            1 => format!("batchnorm1d expects [{n}] or [{n}, L]"),
            _ => format!("batchnorm2d expects [{n}, H, W]"),
        });
    }
    let stats = ["weight", "bias", "running_mean", "running_var"];
    Ok((x.to_vec(), stats.map(|p| (p.to_string(), vec![n])).to_vec()))
}
