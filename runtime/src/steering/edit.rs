//! EXPO's on-the-fly edit (ALGORITHMS.md section 6): a small edit policy proposes `delta(obs, chunk)` for
//! every candidate; the edited candidate is `chunk + clip(delta, -bound, bound)` (normalized action space),
//! and the selector scores base and edited candidates together (base ones first), so an edit is executed
//! only when it scores higher. A failing edit graph (error or non-finite output) leaves the edited copies
//! equal to their base candidates, which then win every tie: the base chunk goes through, counted.

use crate::policy::manifest::ActionLayout;
use crate::policy::ChunkView;
use crate::steering::model::StageModel;

#[derive(Debug)]
pub struct Edit {
    model: StageModel,
    bound: f32,
    norm: Vec<f32>,
    rad: Vec<f32>,
    failures: u64,
    horizon: usize,
    joints: usize,
}

impl Edit {
    pub(crate) fn new(model: StageModel, bound: f64, candidates: usize, horizon: usize, joints: usize) -> Self {
        let len = 2 * candidates * horizon * joints;
        Edit { model, bound: bound as f32, norm: vec![0.0; len], rad: vec![0.0; len], failures: 0, horizon, joints }
    }

    /// Edits `candidates` candidates per call from now on (deadline awareness). Allocates nothing.
    pub(crate) fn use_batch(&mut self, candidates: usize) -> crate::Result<()> {
        self.model.use_batch(candidates)?;
        let len = 2 * candidates * self.horizon * self.joints;
        self.norm.resize(len, 0.0);
        self.rad.resize(len, 0.0);
        Ok(())
    }

    pub fn bound(&self) -> f64 {
        self.bound as f64
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Makes the base and edited candidates of `chunk`; see [`Edit::view`].
    pub fn apply(&mut self, observation: &[f32], chunk: &ChunkView<'_>, layout: &ActionLayout) {
        let base = chunk.normalized.len();
        self.norm[..base].copy_from_slice(chunk.normalized);
        self.rad[..base].copy_from_slice(chunk.joint_rad);
        let ran = (|| -> crate::Result<()> {
            for row in self.model.input(0)?.chunks_exact_mut(observation.len()) {
                row.copy_from_slice(observation);
            }
            self.model.input(1)?.copy_from_slice(chunk.normalized);
            self.model.run()
        })();
        let delta = self.model.output();
        let ok = ran.is_ok() && delta.len() == base && delta.iter().all(|v| v.is_finite());
        if !ok {
            self.failures += 1;
        }
        let a = self.joints;
        for i in 0..base {
            let d = match delta.get(i) {
                Some(v) if ok => v.clamp(-self.bound, self.bound),
                _ => 0.0,
            };
            let x = chunk.normalized[i] + d;
            self.norm[base + i] = x;
            let j = i % a;
            let r = match layout.clip {
                Some((lo, hi)) => x.clamp(lo, hi),
                None => x,
            };
            self.rad[base + i] = r * layout.scale[j] + layout.offset[j];
        }
    }

    /// The 2N candidates of the last [`Edit::apply`]: N base, then N edited.
    pub fn view(&self) -> ChunkView<'_> {
        ChunkView {
            candidates: self.norm.len() / (self.horizon * self.joints),
            horizon: self.horizon,
            joints: self.joints,
            normalized: &self.norm,
            joint_rad: &self.rad,
        }
    }
}
