//! The CPU ReLU (`cpu_relu_op`) computes what Burn's does, bit for bit but for the sign of a
//! zero, which Burn leaves to the platform's `max`: its output and its input gradient, on
//! negative values, zeros of both signs, NaN and infinities, with and without autodiff and in
//! float16 (Burn's own there); and writing in place never changes a tensor that something else
//! still holds.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use pollen_trainer::cpu_relu_op;

type B = Autodiff<Flex>;

/// Random values with the edge cases among them, shaped `[3, 4, 5]`.
fn input() -> Tensor<B, 3> {
    let device = Default::default();
    let mut values = Tensor::<B, 1>::random([60], Distribution::Normal(0.0, 1.0), &device)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let edges = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
    ];
    values[..edges.len()].copy_from_slice(&edges);
    Tensor::from_data(TensorData::new(values, [3, 4, 5]), &device)
}

/// (output, input gradient) of ReLU on `x`, Burn's or ours, under a loss that weighs every
/// output differently.
fn run(x: Tensor<B, 3>, ours: bool) -> (TensorData, TensorData) {
    let weights = Tensor::<B, 3>::random([3, 4, 5], Distribution::Normal(0.0, 1.0), &x.device());
    let x = x.require_grad();
    let y = match ours {
        true => cpu_relu_op::relu(x.clone()),
        false => relu(x.clone()),
    };
    let grads = (y.clone() * weights.clone()).sum().backward();
    (y.into_data(), x.grad(&grads).unwrap().into_data())
}

/// The values' bits, a zero of either sign as +0.
fn bits(d: &TensorData) -> Vec<u32> {
    let value = |v: &f32| if *v == 0.0 { 0 } else { v.to_bits() };
    d.to_vec::<f32>().unwrap().iter().map(value).collect()
}

#[test]
fn a_negative_zero_stays_what_wasms_fmaxf_made_it() {
    let x = Tensor::<Flex, 1>::from_floats([-0.0, 0.0, -1.0, f32::NAN], &Default::default());
    let y = cpu_relu_op::relu(x).into_data().to_vec::<f32>().unwrap();
    let signs: Vec<bool> = y.iter().map(|v| v.is_sign_negative()).collect();
    assert_eq!(signs, [true, false, false, false], "{y:?}");
    assert_eq!(y[1..], [0.0, 0.0, 0.0]);
}

#[test]
fn the_cpu_relu_matches_burns_output_and_gradient() {
    let x = input();
    // The same weights for both: the loss draws them from Burn's seeded generator.
    <B as burn::tensor::backend::Backend>::seed(&x.device(), 7);
    let (y0, dx0) = run(x.clone(), false);
    <B as burn::tensor::backend::Backend>::seed(&x.device(), 7);
    let (y1, dx1) = run(x.clone(), true);
    assert_eq!(bits(&y0), bits(&y1), "output");
    assert_eq!(bits(&dx0), bits(&dx1), "input gradient");
    // Without autodiff (evaluation runs the inner backend).
    assert_eq!(
        bits(&cpu_relu_op::relu(x.clone().inner()).into_data()),
        bits(&y0),
        "inner"
    );
    // A view that is not contiguous (a transpose) is read in its own order.
    let t = x.clone().inner().swap_dims(0, 2);
    assert_eq!(
        bits(&cpu_relu_op::relu(t.clone()).into_data()),
        bits(&relu(t).into_data()),
        "a transposed view"
    );
}

#[test]
fn a_tensor_held_elsewhere_is_left_as_it_was() {
    let x = input().inner();
    let before = bits(&x.clone().into_data());
    let kept = x.clone();
    let y = cpu_relu_op::relu(x);
    assert_eq!(
        bits(&kept.into_data()),
        before,
        "the input another holder kept"
    );
    assert_ne!(bits(&y.into_data()), before, "the output");
    // Under autodiff the output is kept for the backward pass, and the next in-place layer must
    // not overwrite it: the gradient of relu(relu(x)) is relu's.
    let x = input().require_grad();
    let twice = cpu_relu_op::relu(cpu_relu_op::relu(x.clone()));
    let once = relu(x.clone());
    let g_twice = x.grad(&twice.sum().backward()).unwrap();
    let g_once = x.grad(&once.sum().backward()).unwrap();
    assert_eq!(bits(&g_twice.into_data()), bits(&g_once.into_data()));
}

#[test]
fn float16_goes_to_burns_relu() {
    let x = input().inner().cast(DType::F16);
    assert_eq!(cpu_relu_op::relu(x.clone()).dtype(), DType::F16);
    assert_eq!(
        cpu_relu_op::relu(x.clone()).into_data(),
        relu(x).into_data()
    );
}
