//! Observation frames and their history.
//!
//! A [`Frame`] holds the raw values of every field the manifest's terms read, for one instant, in SI units
//! and in the policy's joint order. The policy keeps the last few frames in a ring ([`History`]) and
//! assembles the graph's observation vector from them: term after term, each term's frames oldest first
//! (term-major), or whole frames oldest first (frame-major); each value `(raw - offset) * scale`,
//! optionally clipped per element before or after. At reset the whole history is filled with the first
//! frame, as IsaacLab and the locomotion deploy codes do. The policy computes `last_action`, `constant` and
//! `phase` terms itself; they are stored with each frame, so their history is what they were then.

use crate::error::{Error, Result};
use crate::policy::manifest::{Field, HistoryLayout, Part, PhaseSpec, Term, TermClip};

/// Terms one block of an assembled input may hold (more: the manifest is refused).
pub(crate) const MAX_RUN: usize = 64;

/// Where one field lives inside a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    name: String,
    offset: usize,
    size: usize,
    /// Read by steering stages only, never by the model: NaN there means "not received" and is allowed.
    optional: bool,
}

/// Index of a field in a [`Frame`], resolved once so the hot path does no string compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldId(usize);

/// Raw values of every observation field for one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    slots: Vec<Slot>,
    values: Vec<f32>,
}

impl Frame {
    /// The frame layout the terms need: each distinct field once, `last_action` excluded (the policy keeps it).
    pub(crate) fn for_terms(terms: &[Term]) -> Frame {
        let mut slots: Vec<Slot> = Vec::new();
        let mut len = 0;
        for t in terms {
            if t.is_computed() || slots.iter().any(|s| s.name == t.field.name()) {
                continue;
            }
            slots.push(Slot { name: t.field.name().to_string(), offset: len, size: t.size, optional: false });
            len += t.size;
        }
        Frame { slots, values: vec![0.0; len] }
    }

    /// A frame of the given named fields and sizes, in that order (for tools and tests; a policy makes its
    /// own with [`Policy::new_frame`](crate::policy::Policy::new_frame)).
    pub fn with_fields(fields: &[(&str, usize)]) -> Frame {
        let mut slots = Vec::new();
        let mut len = 0;
        for (name, size) in fields {
            slots.push(Slot { name: name.to_string(), offset: len, size: *size, optional: false });
            len += size;
        }
        Frame { slots, values: vec![0.0; len] }
    }

    /// The frame a manifest needs: its terms' fields, then the named vectors its `[steering]` part reads.
    pub(crate) fn for_manifest(m: &crate::policy::Manifest) -> Frame {
        let mut f = Frame::for_terms(&m.terms);
        for (name, size) in &m.steering.fields {
            if f.id(name).is_none() {
                f.slots.push(Slot { name: name.to_string(), offset: f.values.len(), size: *size, optional: true });
                f.values.resize(f.values.len() + size, 0.0);
            }
        }
        f
    }

    /// Field names with their sizes, in frame order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, usize)> {
        self.slots.iter().map(|s| (s.name.as_str(), s.size))
    }

    pub fn id(&self, name: &str) -> Option<FieldId> {
        self.slots.iter().position(|s| s.name == name).map(FieldId)
    }

    /// Sets a field by name; the length must match.
    pub fn set(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let id = self.id(name).ok_or_else(|| Error::Observation {
            field: name.to_string(),
            message: format!(
                "the policy reads no such field (it reads: {})",
                self.slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let dst = self.get_mut(id);
        if dst.len() != values.len() {
            return Err(Error::Observation {
                field: name.to_string(),
                message: format!("has {} values, expected {}", values.len(), dst.len()),
            });
        }
        dst.copy_from_slice(values);
        Ok(())
    }

    /// Every value, fields back to back in frame order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Copies another frame's values into this one (same layout); allocates nothing.
    pub fn copy_from(&mut self, other: &Frame) {
        let n = self.values.len().min(other.values.len());
        self.values[..n].copy_from_slice(&other.values[..n]);
    }

    /// Sets every value (fields back to back in frame order), e.g. from a recording. The length must match.
    pub fn set_values(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.values.len() {
            return Err(Error::Observation {
                field: "(frame)".into(),
                message: format!("has {} values, expected {}", values.len(), self.values.len()),
            });
        }
        self.values.copy_from_slice(values);
        Ok(())
    }

    pub fn get(&self, id: FieldId) -> &[f32] {
        let s = &self.slots[id.0];
        &self.values[s.offset..s.offset + s.size]
    }

    pub fn get_mut(&mut self, id: FieldId) -> &mut [f32] {
        let s = &self.slots[id.0];
        &mut self.values[s.offset..s.offset + s.size]
    }

    /// The first field holding a NaN or infinity, if any.
    fn non_finite_field(&self) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| !s.optional && self.values[s.offset..s.offset + s.size].iter().any(|v| !v.is_finite()))
            .map(|s| s.name.as_str())
    }
}

/// Where a term reads from in a stored frame.
#[derive(Debug, Clone)]
struct TermPlan {
    start: usize,
    size: usize,
    history: usize,
    offset: Vec<f32>,
    scale: Vec<f32>,
    clip: Option<TermClip>,
}

/// A `phase` term's clock: where it writes in a stored frame, and what resets it.
#[derive(Debug, Clone)]
struct PhaseClock {
    /// Offset in the computed part of a stored frame.
    at: usize,
    spec: PhaseSpec,
    /// Frame offset and size of the reset field, and its threshold.
    reset: Option<(usize, usize, f64)>,
    phi: f64,
}

/// The last `depth` frames (plus what the policy computes: the last action, constants, gait phases) and
/// the assembled observation vector.
#[derive(Debug, Clone)]
pub(crate) struct History {
    plans: Vec<TermPlan>,
    layout: HistoryLayout,
    /// Field name of each term, for errors.
    names: Vec<String>,
    /// Stored frame = the frame's values, the last action, then the computed terms' values.
    stride: usize,
    frame_len: usize,
    depth: usize,
    ring: Vec<f32>,
    newest: usize,
    primed: bool,
    last_action: Vec<f32>,
    /// Constants (with where they go in `computed`) and phase clocks; `computed` is this tick's values.
    constants: Vec<(usize, Vec<f32>)>,
    phases: Vec<PhaseClock>,
    computed: Vec<f32>,
    /// Every term's values, term after term, each term's slots oldest first; where each term starts.
    by_term: Vec<f32>,
    term_at: Vec<usize>,
    /// All terms in the manifest's layout: the observation vector.
    assembled: Vec<f32>,
}

impl History {
    pub(crate) fn new(terms: &[Term], layout: HistoryLayout, frame: &Frame, action_dim: usize) -> History {
        let frame_len = frame.values.len();
        let field_at = |name: &str| frame.slots.iter().find(|s| s.name == name).map_or((0, 0), |s| (s.offset, s.size));
        let (mut constants, mut phases, mut computed_len) = (Vec::new(), Vec::new(), 0);
        let mut plans = Vec::with_capacity(terms.len());
        for t in terms {
            let start = match t.field {
                Field::LastAction => frame_len,
                Field::Constant | Field::Phase => {
                    let at = computed_len;
                    computed_len += t.size;
                    if let Some(spec) = &t.phase {
                        let reset = spec.reset.as_ref().map(|(name, below)| {
                            let (off, size) = field_at(name);
                            (off, size, *below)
                        });
                        phases.push(PhaseClock { at, spec: spec.clone(), reset, phi: 0.0 });
                    } else {
                        constants.push((at, t.values.clone()));
                    }
                    frame_len + action_dim + at
                }
                _ => field_at(t.field.name()).0,
            };
            plans.push(TermPlan {
                start,
                size: t.size,
                history: t.history,
                offset: t.offset.clone(),
                scale: t.scale.clone(),
                clip: t.clip.clone(),
            });
        }
        let stride = frame_len + action_dim + computed_len;
        let depth = terms.iter().map(|t| t.history).max().unwrap_or(1);
        let dim = terms.iter().map(|t| t.size * t.history).sum();
        let term_at = terms.iter().scan(0, |o, t| Some(std::mem::replace(o, *o + t.size * t.history))).collect();
        History {
            plans,
            layout,
            names: terms.iter().map(|t| t.field.name().to_string()).collect(),
            stride,
            frame_len,
            depth,
            ring: vec![0.0; stride * depth],
            newest: 0,
            primed: false,
            last_action: vec![0.0; action_dim],
            constants,
            phases,
            computed: vec![0.0; computed_len],
            by_term: vec![0.0; dim],
            term_at,
            assembled: vec![0.0; dim],
        }
    }

    /// Forgets every frame and the last action, and sets every gait phase back to 0.
    pub(crate) fn reset(&mut self) {
        self.primed = false;
        self.last_action.fill(0.0);
        for p in &mut self.phases {
            p.phi = 0.0;
        }
    }

    pub(crate) fn set_last_action(&mut self, a: &[f32]) {
        let n = self.last_action.len().min(a.len());
        self.last_action[..n].copy_from_slice(&a[..n]);
    }

    /// The graph's output action becomes the last action, clipped to `clip` when the manifest feeds back
    /// the clipped action (`[observation] last_action = "clipped"`).
    pub(crate) fn feed_output(&mut self, a: &[f32], clip: Option<(f32, f32)>) {
        self.set_last_action(a);
        if let Some((lo, hi)) = clip {
            for v in &mut self.last_action {
                *v = v.clamp(lo, hi);
            }
        }
    }

    /// This tick's constants and phases (each phase then advances, or holds at 0 while its reset field's
    /// norm is below the threshold).
    fn compute(&mut self, frame: &[f32]) {
        for (at, values) in &self.constants {
            self.computed[*at..*at + values.len()].copy_from_slice(values);
        }
        for p in &mut self.phases {
            let still = p.reset.is_some_and(|(off, size, below)| {
                frame[off..off + size].iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt() < below
            });
            if still {
                p.phi = 0.0;
            }
            let angle = std::f64::consts::TAU * p.phi;
            if p.spec.sin_cos {
                self.computed[p.at] = angle.sin() as f32;
                self.computed[p.at + 1] = angle.cos() as f32;
            } else {
                self.computed[p.at] = p.phi as f32;
            }
            if !still {
                p.phi = (p.phi + p.spec.step_s / p.spec.period_s).fract();
            }
        }
    }

    /// Stores `frame` as the newest and re-assembles the observation vector. A non-finite value is refused
    /// before it can reach the history.
    pub(crate) fn push(&mut self, frame: &Frame) -> Result<()> {
        if frame.values.len() != self.frame_len {
            return Err(Error::Usage(format!(
                "frame has {} values, the policy's frames have {}",
                frame.values.len(),
                self.frame_len
            )));
        }
        if let Some(name) = frame.non_finite_field() {
            return Err(Error::Observation {
                field: name.to_string(),
                message: "holds a NaN or infinite value".into(),
            });
        }
        self.compute(&frame.values);
        let stride = self.stride;
        let write = |ring: &mut [f32], slot: usize, frame: &[f32], last: &[f32], computed: &[f32]| {
            let dst = &mut ring[slot * stride..(slot + 1) * stride];
            dst[..frame.len()].copy_from_slice(frame);
            dst[frame.len()..frame.len() + last.len()].copy_from_slice(last);
            dst[frame.len() + last.len()..].copy_from_slice(computed);
        };
        if self.primed {
            self.newest = (self.newest + 1) % self.depth;
            write(&mut self.ring, self.newest, &frame.values, &self.last_action, &self.computed);
        } else {
            for slot in 0..self.depth {
                write(&mut self.ring, slot, &frame.values, &self.last_action, &self.computed);
            }
            self.newest = 0;
            self.primed = true;
        }
        match self.assemble() {
            None => Ok(()),
            Some(term) => {
                // Finite raw values can still overflow through a huge scale; the graph must never see that.
                self.primed = false;
                Err(Error::Observation {
                    field: self.names[term].clone(),
                    message: "is finite but not after offset and scale (overflow)".into(),
                })
            }
        }
    }

    /// Writes history slot `h` (0 = the oldest this term looks at) of term `p` at `o`; returns whether every
    /// value is finite.
    fn emit(&self, p: &TermPlan, h: usize, out: &mut [f32]) -> bool {
        let age = p.history - 1 - h;
        let slot = (self.newest + self.depth - age) % self.depth;
        let src = &self.ring[slot * self.stride + p.start..slot * self.stride + p.start + p.size];
        let norm = h * p.size..(h + 1) * p.size;
        let mut finite = true;
        for (j, ((raw, off), scale)) in src.iter().zip(&p.offset[norm.clone()]).zip(&p.scale[norm]).enumerate() {
            let v = match &p.clip {
                None => (raw - off) * scale,
                Some(c) if c.raw => (raw.clamp(c.low[j], c.high[j]) - off) * scale,
                Some(c) => ((raw - off) * scale).clamp(c.low[j], c.high[j]),
            };
            finite &= v.is_finite();
            out[j] = v;
        }
        finite
    }

    /// Fills every term's values and the observation vector; returns the index of a term whose scaled
    /// values are not finite.
    fn assemble(&mut self) -> Option<usize> {
        let mut by_term = std::mem::take(&mut self.by_term);
        let mut bad = None;
        for (ti, p) in self.plans.iter().enumerate() {
            for h in 0..p.history {
                let o = self.term_at[ti] + h * p.size;
                if !self.emit(p, h, &mut by_term[o..o + p.size]) && bad.is_none() {
                    bad = Some(ti);
                }
            }
        }
        self.by_term = by_term;
        let mut out = std::mem::take(&mut self.assembled);
        let all = 0..self.plans.len();
        self.lay_out(all.map(Part::Term), &mut out);
        self.assembled = out;
        bad
    }

    /// Writes `terms` (consecutive term parts) into `out` in the manifest's layout; returns the width.
    fn lay_block(&self, terms: &[usize], out: &mut [f32]) -> usize {
        let mut o = 0;
        match self.layout {
            HistoryLayout::TermMajor => {
                for &ti in terms {
                    let p = &self.plans[ti];
                    let n = p.size * p.history;
                    out[o..o + n].copy_from_slice(&self.by_term[self.term_at[ti]..self.term_at[ti] + n]);
                    o += n;
                }
            }
            HistoryLayout::FrameMajor => {
                // Every term has the same history (checked when the manifest was read).
                let slots = terms.first().map_or(0, |&ti| self.plans[ti].history);
                for h in 0..slots {
                    for &ti in terms {
                        let p = &self.plans[ti];
                        let src = self.term_at[ti] + h * p.size;
                        out[o..o + p.size].copy_from_slice(&self.by_term[src..src + p.size]);
                        o += p.size;
                    }
                }
            }
        }
        o
    }

    /// Writes `parts` into `out`: each run of consecutive terms as one block in the manifest's layout, each
    /// encoder output from `outputs` (by encoder index) whole. Allocates nothing.
    pub(crate) fn write_parts<'a>(&self, parts: &[Part], outputs: &dyn Fn(usize) -> &'a [f32], out: &mut [f32]) {
        let mut o = 0;
        let mut run = [0usize; MAX_RUN];
        let mut i = 0;
        while i < parts.len() {
            match parts[i] {
                Part::Output(e) => {
                    let src = outputs(e);
                    out[o..o + src.len()].copy_from_slice(src);
                    o += src.len();
                    i += 1;
                }
                Part::Term(_) => {
                    let mut n = 0;
                    while let Some(Part::Term(t)) = parts.get(i) {
                        if n == MAX_RUN {
                            break;
                        }
                        run[n] = *t;
                        n += 1;
                        i += 1;
                    }
                    o += self.lay_block(&run[..n], &mut out[o..]);
                }
            }
        }
    }

    fn lay_out(&self, parts: impl Iterator<Item = Part>, out: &mut [f32]) {
        let mut run = [0usize; MAX_RUN];
        let mut n = 0;
        let mut o = 0;
        for p in parts {
            if let Part::Term(t) = p {
                if n == MAX_RUN {
                    o += self.lay_block(&run[..n], &mut out[o..]);
                    n = 0;
                }
                run[n] = t;
                n += 1;
            }
        }
        self.lay_block(&run[..n], &mut out[o..]);
    }

    /// The observation vector as the graph receives it.
    pub(crate) fn assembled(&self) -> &[f32] {
        &self.assembled
    }

    pub(crate) fn is_primed(&self) -> bool {
        self.primed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::manifest::Manifest;

    fn terms() -> Vec<Term> {
        let text = r#"
            format_version = 1
            [model]
            kind = "direct"
            [io]
            observation = "obs"
            output = "a"
            [[observation.terms]]
            field = "joint_pos"
            history = 3
            offset = 1.0
            scale = 2.0
            [[observation.terms]]
            field = "goal"
            size = 1
            clip = 5.0
            [[observation.terms]]
            field = "last_action"
            [action]
            joints = ["a", "b"]
            dt_s = 0.1
        "#;
        match Manifest::parse(text, std::path::Path::new("m.toml")) {
            Ok(m) => m.terms,
            Err(e) => panic!("{e}"),
        }
    }

    fn push(h: &mut History, f: &mut Frame, q: [f32; 2], goal: f32) {
        assert!(f.set("joint_pos", &q).is_ok() && f.set("goal", &[goal]).is_ok());
        assert!(h.push(f).is_ok());
    }

    #[test]
    fn terms_are_term_major_oldest_first_and_reset_fills_with_the_first_frame() {
        let t = terms();
        let mut f = Frame::for_terms(&t);
        let mut h = History::new(&t, HistoryLayout::TermMajor, &f, 2);
        push(&mut h, &mut f, [1.0, 2.0], 3.0);
        // joint_pos x3 (all the first frame), goal, last_action (zero).
        assert_eq!(h.assembled(), &[0.0, 2.0, 0.0, 2.0, 0.0, 2.0, 3.0, 0.0, 0.0]);
        h.set_last_action(&[0.5, -0.5]);
        push(&mut h, &mut f, [2.0, 3.0], 100.0);
        assert_eq!(h.assembled(), &[0.0, 2.0, 0.0, 2.0, 2.0, 4.0, 5.0, 0.5, -0.5]);
        push(&mut h, &mut f, [3.0, 4.0], -9.0);
        assert_eq!(h.assembled(), &[0.0, 2.0, 2.0, 4.0, 4.0, 6.0, -5.0, 0.5, -0.5]);
        h.reset();
        push(&mut h, &mut f, [5.0, 5.0], 0.0);
        assert_eq!(h.assembled(), &[8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_non_finite_value_is_refused_and_names_its_field() {
        let t = terms();
        let mut f = Frame::for_terms(&t);
        let mut h = History::new(&t, HistoryLayout::TermMajor, &f, 2);
        assert!(f.set("goal", &[f32::NAN]).is_ok());
        match h.push(&f) {
            Err(Error::Observation { field, .. }) => assert_eq!(field, "goal"),
            other => panic!("expected an observation error, got {other:?}"),
        }
        assert!(!h.is_primed(), "the bad frame never reached the history");
    }

    #[test]
    fn setting_a_field_checks_its_name_and_length() {
        let mut f = Frame::for_terms(&terms());
        assert!(matches!(f.set("joint_pos", &[1.0]), Err(Error::Observation { .. })));
        assert!(matches!(f.set("last_action", &[1.0, 2.0]), Err(Error::Observation { .. })));
        assert!(f.set("joint_pos", &[1.0, 2.0]).is_ok());
    }
}
