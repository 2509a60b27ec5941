//! Observation frames and their history.
//!
//! A [`Frame`] holds the raw values of every field the manifest's terms read, for one instant, in SI units
//! and in the policy's joint order. The policy keeps the last few frames in a ring ([`History`]) and
//! assembles the graph's observation vector from them: term after term (term-major), each term's frames
//! oldest first, each value `(raw - offset) * scale`, optionally clipped. At reset the whole history is
//! filled with the first frame, as IsaacLab and the locomotion deploy codes do.

use crate::error::{Error, Result};
use crate::policy::manifest::{Field, Term};

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
            if t.field == Field::LastAction || slots.iter().any(|s| s.name == t.field.name()) {
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
    clip: Option<f32>,
}

/// The last `depth` frames (plus the policy's last action) and the assembled observation vector.
#[derive(Debug, Clone)]
pub(crate) struct History {
    plans: Vec<TermPlan>,
    /// Field name of each term, for errors.
    names: Vec<String>,
    /// Stored frame = the frame's values followed by the last action.
    stride: usize,
    frame_len: usize,
    depth: usize,
    ring: Vec<f32>,
    newest: usize,
    primed: bool,
    last_action: Vec<f32>,
    assembled: Vec<f32>,
}

impl History {
    pub(crate) fn new(terms: &[Term], frame: &Frame, action_dim: usize) -> History {
        let frame_len = frame.values.len();
        let stride = frame_len + action_dim;
        let plans: Vec<TermPlan> = terms
            .iter()
            .map(|t| {
                let start = if t.field == Field::LastAction {
                    frame_len
                } else {
                    frame.slots.iter().find(|s| s.name == t.field.name()).map_or(0, |s| s.offset)
                };
                TermPlan {
                    start,
                    size: t.size,
                    history: t.history,
                    offset: t.offset.clone(),
                    scale: t.scale.clone(),
                    clip: t.clip,
                }
            })
            .collect();
        let depth = terms.iter().map(|t| t.history).max().unwrap_or(1);
        let dim = terms.iter().map(|t| t.size * t.history).sum();
        History {
            plans,
            names: terms.iter().map(|t| t.field.name().to_string()).collect(),
            stride,
            frame_len,
            depth,
            ring: vec![0.0; stride * depth],
            newest: 0,
            primed: false,
            last_action: vec![0.0; action_dim],
            assembled: vec![0.0; dim],
        }
    }

    /// Forgets every frame and the last action.
    pub(crate) fn reset(&mut self) {
        self.primed = false;
        self.last_action.fill(0.0);
    }

    pub(crate) fn set_last_action(&mut self, a: &[f32]) {
        let n = self.last_action.len().min(a.len());
        self.last_action[..n].copy_from_slice(&a[..n]);
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
        let stride = self.stride;
        let write = |ring: &mut [f32], slot: usize, frame: &[f32], last: &[f32]| {
            let dst = &mut ring[slot * stride..(slot + 1) * stride];
            dst[..frame.len()].copy_from_slice(frame);
            dst[frame.len()..].copy_from_slice(last);
        };
        if self.primed {
            self.newest = (self.newest + 1) % self.depth;
            write(&mut self.ring, self.newest, &frame.values, &self.last_action);
        } else {
            for slot in 0..self.depth {
                write(&mut self.ring, slot, &frame.values, &self.last_action);
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

    /// Fills the observation vector; returns the index of a term whose scaled values are not finite.
    fn assemble(&mut self) -> Option<usize> {
        let mut o = 0;
        let mut bad = None;
        for (ti, p) in self.plans.iter().enumerate() {
            for h in 0..p.history {
                // h = 0 is the oldest frame this term looks at.
                let age = p.history - 1 - h;
                let slot = (self.newest + self.depth - age) % self.depth;
                let src = &self.ring[slot * self.stride + p.start..slot * self.stride + p.start + p.size];
                let norm = h * p.size..(h + 1) * p.size;
                for ((raw, off), scale) in src.iter().zip(&p.offset[norm.clone()]).zip(&p.scale[norm]) {
                    let mut v = (raw - off) * scale;
                    if let Some(c) = p.clip {
                        v = v.clamp(-c, c);
                    }
                    if !v.is_finite() && bad.is_none() {
                        bad = Some(ti);
                    }
                    self.assembled[o] = v;
                    o += 1;
                }
            }
        }
        bad
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
        let mut h = History::new(&t, &f, 2);
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
        let mut h = History::new(&t, &f, 2);
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
