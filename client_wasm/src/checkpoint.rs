//! A training job's checkpoint: where it is (epoch, batch, steps, the loss so far), the model's
//! weights and the optimizer's state, in one blob that a browser keeps in IndexedDB and a fresh
//! trainer resumes from, bit for bit.
//!
//! The blob is `PLNCKPT1`, a CRC-32 of the body, the body's length, then the body (little-endian
//! throughout). The checksum matters because the module aborts on a panic: a blob cut short by a
//! closing tab, or edited, must be refused as an error before anything reads it. The body starts
//! with a fingerprint of the job (model layout, options, data), so a checkpoint never resumes a
//! different job.

use crate::config::TrainingConfig;
use crate::data::Dataset;
use crate::error::{Result, TrainerError};
use crate::optim_state::SavedState;
use crate::spec::ModelSpec;

const MAGIC: &[u8; 8] = b"PLNCKPT1";
const HEADER: usize = 8 + 4 + 8;

/// Where a job stands after its last finished step, and what it has learned so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// `fingerprint` of the job this is a checkpoint of.
    pub fingerprint: u64,
    /// The job's seed: shuffles, augmentation and dropout are drawn from it step by step.
    pub seed: u64,
    /// The epoch, and the batch in it, that the job runs next.
    pub epoch: usize,
    pub batch: usize,
    pub steps: usize,
    pub examples: usize,
    /// The sum of each batch's loss × its size, for the job's mean loss.
    pub total: f64,
    /// The model's weights: fp32 safetensors in PyTorch's names, as `weights::encode` writes them.
    pub weights: Vec<u8>,
    /// Each trained parameter's optimizer state, in slot order.
    pub optimizer: Vec<Option<SavedState>>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Writer(Vec::with_capacity(self.weights.len() * 3 + 128));
        for v in [self.fingerprint, self.seed] {
            body.u64(v);
        }
        for v in [self.epoch, self.batch, self.steps, self.examples] {
            body.u64(v as u64);
        }
        body.0.extend_from_slice(&self.total.to_le_bytes());
        body.bytes(&self.weights);
        body.u64(self.optimizer.len() as u64);
        for state in &self.optimizer {
            body.flag(state.is_some());
            let Some(state) = state else { continue };
            body.u64(state.counters.len() as u64);
            for &c in &state.counters {
                body.u64(c);
            }
            body.u64(state.tensors.len() as u64);
            for t in &state.tensors {
                body.flag(t.is_some());
                let Some((shape, values)) = t else { continue };
                body.u64(shape.len() as u64);
                for &d in shape {
                    body.u64(d as u64);
                }
                body.u64(values.len() as u64);
                for v in values {
                    body.0.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let body = body.0;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The checkpoint in `bytes`, or why not: never a panic, whatever the bytes are.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a Pollen checkpoint"));
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let body = &bytes[HEADER..];
        if body.len() as u64 != len {
            return Err(bad(&format!(
                "{} bytes where the header says {len}: cut short?",
                body.len()
            )));
        }
        if crc32fast::hash(body) != crc {
            return Err(bad("its checksum does not match: it is damaged"));
        }
        let mut r = Reader(body);
        let (fingerprint, seed) = (r.u64()?, r.u64()?);
        let (epoch, batch, steps, examples) = (r.usize()?, r.usize()?, r.usize()?, r.usize()?);
        let total = f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let weights = r.bytes()?.to_vec();
        let slots = r.count(1)?;
        let mut optimizer = Vec::with_capacity(slots);
        for _ in 0..slots {
            if !r.flag()? {
                optimizer.push(None);
                continue;
            }
            let counters = (0..r.count(8)?).map(|_| r.u64()).collect::<Result<_>>()?;
            let count = r.count(1)?;
            let mut tensors = Vec::with_capacity(count);
            for _ in 0..count {
                if !r.flag()? {
                    tensors.push(None);
                    continue;
                }
                let shape: Vec<usize> =
                    (0..r.count(8)?).map(|_| r.usize()).collect::<Result<_>>()?;
                let n = r.count(4)?;
                if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(n) {
                    return Err(bad("a tensor's values do not fill its shape"));
                }
                let values = r
                    .take(n * 4)?
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                tensors.push(Some((shape, values)));
            }
            optimizer.push(Some(SavedState { counters, tensors }));
        }
        if !r.0.is_empty() {
            return Err(bad("it has bytes after its end"));
        }
        Ok(Checkpoint {
            fingerprint,
            seed,
            epoch,
            batch,
            steps,
            examples,
            total,
            weights,
            optimizer,
        })
    }
}

/// What makes two jobs the same: the model's tensors, the options and the data, hashed (FNV-1a).
pub fn fingerprint(spec: &ModelSpec, config: &TrainingConfig, data: &Dataset) -> Result<u64> {
    let mut h = Fnv::new();
    for t in spec.wire_tensors()? {
        h.bytes(t.name.as_bytes());
        for d in t.shape {
            h.word(d as u64);
        }
    }
    h.bytes(format!("{config:?}").as_bytes());
    let (x, y) = data.content();
    h.word(y.len() as u64);
    for v in x {
        h.word(u64::from(v.to_bits()));
    }
    for l in y {
        h.word(u64::from(l.to_bits()));
    }
    Ok(h.0)
}

fn bad(why: &str) -> TrainerError {
    TrainerError::Checkpoint(why.into())
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// A whole word per multiply: four times fewer rounds than bytewise over a dataset's floats.
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0100_0000_01b3);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        for &byte in b {
            self.word(u64::from(byte));
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn flag(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(bad("it ends in the middle of a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| bad("a count is too large"))
    }

    /// A count of items of at least `size` bytes each, refused when the rest could not hold them
    /// (so a damaged count never reserves memory for nothing).
    fn count(&mut self, size: usize) -> Result<usize> {
        let n = self.usize()?;
        if n.checked_mul(size).is_none_or(|b| b > self.0.len()) {
            return Err(bad("a count is larger than what follows"));
        }
        Ok(n)
    }

    fn flag(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(bad("a flag is neither 0 nor 1")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.count(1)?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            fingerprint: 7,
            seed: 11,
            epoch: 1,
            batch: 3,
            steps: 9,
            examples: 90,
            total: 12.5,
            weights: vec![1, 2, 3, 4],
            optimizer: vec![
                None,
                Some(SavedState {
                    counters: vec![5],
                    tensors: vec![Some((vec![2, 1], vec![0.5, -1.0])), None],
                }),
            ],
        }
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn every_damaged_or_cut_blob_is_refused_without_a_panic() {
        let blob = sample().encode();
        for cut in 0..blob.len() {
            assert!(Checkpoint::decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..blob.len() {
            let mut damaged = blob.clone();
            damaged[at] ^= 0x10;
            let err = Checkpoint::decode(&damaged).expect_err("a flipped bit is found");
            assert!(err.to_string().starts_with("bad checkpoint:"), "{err}");
        }
    }

    #[test]
    fn a_body_with_a_valid_checksum_but_lying_counts_is_refused() {
        // Damage that keeps the checksum right: a count far past the end of the body.
        let mut body = sample().encode()[HEADER..].to_vec();
        let weights_len_at = 8 * 6 + 8;
        body[weights_len_at..weights_len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        blob.extend_from_slice(&(body.len() as u64).to_le_bytes());
        blob.extend_from_slice(&body);
        let err = Checkpoint::decode(&blob).unwrap_err();
        assert!(
            err.to_string().contains("larger than what follows"),
            "{err}"
        );
    }
}
