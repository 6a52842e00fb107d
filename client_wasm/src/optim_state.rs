//! An optimizer's per-parameter state taken apart into tensors and counters, and put back, so a
//! checkpoint can carry it.
//!
//! Burn's own optimizer records serialise through `Record::into_item`, which reads every tensor
//! synchronously: WebGPU on the web cannot, and would abort the module. Taken apart, the state's
//! tensors are read asynchronously like the weights. The state is keyed by the model's slot order,
//! not by `ParamId`, because loading weights makes new parameters (see `params::Slot::set`).

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::{Momentum, MomentumConfig};
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    Adam, AdamState, AdamW, AdamWState, AdaptiveMomentumState, CenteredState, Optimizer, RmsProp,
    RmsPropState, Sgd, SgdState, SimpleOptimizer, SquareAvgState,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, TrainerError};
use crate::model::Model;
use crate::params::{self, Slot};
use crate::weights::values;

/// One parameter's optimizer state, in the optimizer's own order of fields.
pub struct Parts<B: Backend, const D: usize> {
    pub tensors: Vec<Option<Tensor<B, D>>>,
    pub counters: Vec<u64>,
}

/// A parameter's state read back to the host: counters, and each tensor's shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedState {
    pub counters: Vec<u64>,
    pub tensors: Vec<Option<(Vec<usize>, Vec<f32>)>>,
}

/// What a `SimpleOptimizer` keeps per parameter, as `Parts`.
pub trait StateParts<B: Backend>: SimpleOptimizer<B> {
    /// `like`: the parameter itself, for a state whose tensors Burn keeps private.
    fn split<const D: usize>(state: Self::State<D>, like: Tensor<B, D>) -> Result<Parts<B, D>>;
    fn join<const D: usize>(parts: Parts<B, D>) -> Result<Self::State<D>>;
}

impl<B: Backend> StateParts<B> for Sgd<B> {
    fn split<const D: usize>(state: SgdState<B, D>, like: Tensor<B, D>) -> Result<Parts<B, D>> {
        // The velocity is private; momentum 1 on a zero gradient hands it back exactly (v·1 + 0).
        let velocity = state.momentum.map(|m| {
            let identity = Momentum::<B>::new(&MomentumConfig {
                momentum: 1.0,
                dampening: 0.0,
                nesterov: false,
            });
            identity.transform(like.zeros_like(), Some(m)).0
        });
        Ok(Parts {
            tensors: vec![velocity],
            counters: vec![],
        })
    }

    fn join<const D: usize>(parts: Parts<B, D>) -> Result<SgdState<B, D>> {
        let ([velocity], []) = tensors(parts)?;
        Ok(SgdState::new(
            velocity.map(burn::optim::momentum::MomentumState::new),
        ))
    }
}

impl<B: Backend> StateParts<B> for Adam {
    fn split<const D: usize>(state: AdamState<B, D>, _: Tensor<B, D>) -> Result<Parts<B, D>> {
        Ok(adaptive(state.momentum))
    }

    fn join<const D: usize>(parts: Parts<B, D>) -> Result<AdamState<B, D>> {
        Ok(AdamState::new(adaptive_back(parts)?))
    }
}

impl<B: Backend> StateParts<B> for AdamW {
    fn split<const D: usize>(state: AdamWState<B, D>, _: Tensor<B, D>) -> Result<Parts<B, D>> {
        Ok(adaptive(state.momentum))
    }

    fn join<const D: usize>(parts: Parts<B, D>) -> Result<AdamWState<B, D>> {
        Ok(AdamWState::new(adaptive_back(parts)?))
    }
}

impl<B: Backend> StateParts<B> for RmsProp {
    fn split<const D: usize>(state: RmsPropState<B, D>, _: Tensor<B, D>) -> Result<Parts<B, D>> {
        if state.momentum.is_some() {
            return Err(TrainerError::Config(
                "RMSprop with momentum cannot be checkpointed: Burn keeps its momentum buffer private"
                    .into(),
            ));
        }
        Ok(Parts {
            tensors: vec![
                Some(state.square_avg.square_avg),
                state.centered.grad_avg,
                Some(state.centered.avg),
            ],
            counters: vec![],
        })
    }

    fn join<const D: usize>(parts: Parts<B, D>) -> Result<RmsPropState<B, D>> {
        let ([square_avg, grad_avg, avg], []) = tensors(parts)?;
        let (Some(square_avg), Some(avg)) = (square_avg, avg) else {
            return Err(corrupt("an RMSprop state lacks its averages"));
        };
        Ok(RmsPropState::new(
            SquareAvgState::new(square_avg),
            CenteredState::new(grad_avg, avg),
            None,
        ))
    }
}

fn adaptive<B: Backend, const D: usize>(m: AdaptiveMomentumState<B, D>) -> Parts<B, D> {
    Parts {
        tensors: vec![Some(m.moment_1), Some(m.moment_2), m.max_moment_2],
        counters: vec![m.time as u64],
    }
}

fn adaptive_back<B: Backend, const D: usize>(
    parts: Parts<B, D>,
) -> Result<AdaptiveMomentumState<B, D>> {
    let ([moment_1, moment_2, max_moment_2], [time]) = tensors(parts)?;
    let (Some(moment_1), Some(moment_2)) = (moment_1, moment_2) else {
        return Err(corrupt("an Adam state lacks its moments"));
    };
    let mut state = AdaptiveMomentumState::new(time as usize, moment_1, moment_2);
    state.max_moment_2 = max_moment_2;
    Ok(state)
}

/// The parts as fixed-size arrays, or an error when the checkpoint holds another optimizer's.
#[allow(clippy::type_complexity)]
fn tensors<B: Backend, const D: usize, const T: usize, const C: usize>(
    parts: Parts<B, D>,
) -> Result<([Option<Tensor<B, D>>; T], [u64; C])> {
    let tensors = parts
        .tensors
        .try_into()
        .map_err(|_| corrupt("the optimizer state does not match this optimizer"))?;
    let counters = parts
        .counters
        .try_into()
        .map_err(|_| corrupt("the optimizer state does not match this optimizer"))?;
    Ok((tensors, counters))
}

fn corrupt(what: &str) -> TrainerError {
    TrainerError::Config(format!("checkpoint: {what}"))
}

// Burn's own map type (hashbrown), named through the trait so that it is never spelt twice.
type Records<B, O> = <OptimizerAdaptor<O, Model<B>, B> as Optimizer<Model<B>, B>>::Record;

/// Every trained parameter's state, in slot order (`None` where the optimizer holds none yet).
pub async fn save<B, O>(
    optim: &OptimizerAdaptor<O, Model<B>, B>,
    model: &Model<B>,
) -> Result<Vec<Option<SavedState>>>
where
    B: AutodiffBackend,
    O: StateParts<B::InnerBackend>,
{
    let mut records = optim.to_record();
    let mut model = model.clone();
    let mut out = Vec::new();
    for (_, slot) in params::slots(&mut model) {
        out.push(match slot {
            Slot::Transposed(p) | Slot::Matrix(p) => read_one(&mut records, p.id, p.val()).await?,
            Slot::Kernel1(p) => read_one(&mut records, p.id, p.val()).await?,
            Slot::Kernel(p) => read_one(&mut records, p.id, p.val()).await?,
            Slot::Vector(p) => read_one(&mut records, p.id, p.val()).await?,
            Slot::Running(_) => continue,
        });
    }
    Ok(out)
}

async fn read_one<B, O, const D: usize>(
    records: &mut Records<B, O>,
    id: ParamId,
    like: Tensor<B, D>,
) -> Result<Option<SavedState>>
where
    B: AutodiffBackend,
    O: StateParts<B::InnerBackend>,
{
    let Some(record) = records.remove(&id) else {
        return Ok(None);
    };
    let parts = O::split(record.into_state::<D>(), like.inner())?;
    let mut tensors = Vec::with_capacity(parts.tensors.len());
    for t in parts.tensors {
        tensors.push(match t {
            Some(t) => Some((t.dims().to_vec(), values(t).await?)),
            None => None,
        });
    }
    Ok(Some(SavedState {
        counters: parts.counters,
        tensors,
    }))
}

/// `optim` holding `saved` for `model`'s parameters (the model the checkpoint's weights were loaded into).
pub fn restore<B, O>(
    optim: OptimizerAdaptor<O, Model<B>, B>,
    model: &Model<B>,
    saved: &[Option<SavedState>],
    device: &B::Device,
) -> Result<OptimizerAdaptor<O, Model<B>, B>>
where
    B: AutodiffBackend,
    O: StateParts<B::InnerBackend>,
{
    let mut model = model.clone();
    let trained: Vec<_> = params::slots(&mut model)
        .into_iter()
        .filter(|(_, s)| s.is_trained())
        .collect();
    if trained.len() != saved.len() {
        return Err(corrupt("the optimizer state is for another model"));
    }
    let mut records = Records::<B, O>::default();
    for ((_, slot), state) in trained.into_iter().zip(saved) {
        let Some(state) = state else { continue };
        let (id, record) = match slot {
            Slot::Transposed(p) | Slot::Matrix(p) => (p.id, rebuild(state, p.val(), device)?),
            Slot::Kernel1(p) => (p.id, rebuild(state, p.val(), device)?),
            Slot::Kernel(p) => (p.id, rebuild(state, p.val(), device)?),
            Slot::Vector(p) => (p.id, rebuild(state, p.val(), device)?),
            Slot::Running(_) => unreachable!("filtered out above"),
        };
        records.insert(id, record);
    }
    Ok(optim.load_record(records))
}

fn rebuild<B, O, const D: usize>(
    state: &SavedState,
    like: Tensor<B, D>,
    device: &B::Device,
) -> Result<AdaptorRecord<O, B>>
where
    B: AutodiffBackend,
    O: StateParts<B::InnerBackend>,
{
    let dims = like.dims().to_vec();
    let mut tensors = Vec::with_capacity(state.tensors.len());
    for t in &state.tensors {
        tensors.push(match t {
            Some((shape, values)) if *shape == dims => Some(Tensor::from_data(
                TensorData::new(values.clone(), shape.clone()),
                device,
            )),
            Some(_) => return Err(corrupt("an optimizer state tensor has another shape")),
            None => None,
        });
    }
    let parts = Parts {
        tensors,
        counters: state.counters.clone(),
    };
    Ok(AdaptorRecord::from_state(O::join::<D>(parts)?))
}
