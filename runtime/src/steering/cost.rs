//! Costs of a chunk in joint space with analytic gradients (ALGORITHMS.md section 4), used by guidance
//! during sampling ([`super::guidance`]) and by the cost selector ([`super::select`]).
//!
//! A chunk is `H` actions of the policy's `A` joints in radians, `[H, A]` row-major, f64. Every cost is a
//! sum of squared hinge terms, so it is zero where nothing is wrong, continuous with a continuous
//! gradient, and finite everywhere (no log barrier that a sampler step could jump across):
//!
//! | kind | cost |
//! | --- | --- |
//! | `joint_limits` | `sum max(0, lo + margin - q)^2 + max(0, q - hi + margin)^2` over the robot's limits |
//! | `workspace` | `sum_h sum_axis max(0, min - p_h)^2 + max(0, p_h - max)^2`, `p_h` the tool point by FK |
//! | `keep_out` | `sum_h max(0, radius - |p_h - c|)^2` |
//! | `goal` | `|p_(H-1) - goal|^2` (the chunk's last action), or over every action with `every_action` |
//! | `smoothness` | `sum_h |q_(h+1) - 2 q_h + q_(h-1)|^2` |
//! | `rtc_prefix` | `sum_h W_h |q_h - prev_h|^2`, the previous chunk's remaining actions and RTC weights |
//!
//! The tool point comes from the robot description's chain ([`coxswain_config::Chain`]); joints the policy
//! does not command sit at their default position. A centre or goal may be read from a named vector of
//! the observation frame (`*_from`, e.g. an obstacle a perception node publishes on
//! `robot/<id>/sensor/<name>`), so it follows the world while running; 2 values mean z = 0.

use nalgebra::Vector3;

use crate::error::{Error, Result};
use crate::policy::{FieldId, Frame};
use coxswain_config::Robot;

/// What a cost term is.
#[derive(Debug, Clone, PartialEq)]
pub enum CostKind {
    JointLimits { margin_rad: f64 },
    Workspace { min_m: [f64; 3], max_m: [f64; 3] },
    KeepOut { center_m: [f64; 3], radius_m: f64, center_from: Option<String> },
    Goal { target_m: [f64; 3], target_from: Option<String>, every_action: bool },
    Smoothness,
    RtcPrefix,
}

impl CostKind {
    pub fn name(&self) -> &'static str {
        match self {
            CostKind::JointLimits { .. } => "joint_limits",
            CostKind::Workspace { .. } => "workspace",
            CostKind::KeepOut { .. } => "keep_out",
            CostKind::Goal { .. } => "goal",
            CostKind::Smoothness => "smoothness",
            CostKind::RtcPrefix => "rtc_prefix",
        }
    }

    fn uses_tool(&self) -> bool {
        matches!(self, CostKind::Workspace { .. } | CostKind::KeepOut { .. } | CostKind::Goal { .. })
    }

    /// The frame field this term reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            CostKind::KeepOut { center_from, .. } => center_from.as_deref(),
            CostKind::Goal { target_from, .. } => target_from.as_deref(),
            _ => None,
        }
    }
}

/// A cost term with its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct CostTerm {
    pub kind: CostKind,
    pub weight: f64,
    /// A one-value named vector that sets the weight while running (e.g. published over Zenoh on
    /// `robot/<id>/sensor/<name>`); until one arrives, and whenever it is not finite or negative, `weight`
    /// applies.
    pub weight_from: Option<String>,
}

/// What a cost evaluation reads besides the chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostContext<'a> {
    /// The newest observation frame (for `*_from` fields).
    pub frame: Option<&'a Frame>,
    /// The RTC prefix in joint radians (`[H, A]`) and its weights (`[H]`), when one is set.
    pub rtc: Option<(&'a [f64], &'a [f32])>,
}

/// A set of weighted cost terms bound to a robot and a policy's joints, with every buffer preallocated.
#[derive(Debug, Clone)]
pub struct Costs {
    terms: Vec<CostTerm>,
    /// Frame field of each term's `*_from`, resolved against the policy's frame.
    fields: Vec<Option<FieldId>>,
    /// Frame field of each term's `weight_from`.
    weight_fields: Vec<Option<FieldId>>,
    chain: coxswain_config::Chain,
    /// Robot joint index of each policy joint.
    robot_joint: Vec<usize>,
    /// Policy-joint column of each chain link (None: a joint the policy does not command).
    link_column: Vec<Option<usize>>,
    limits: Vec<(f64, f64)>,
    /// Scratch: the full robot joint vector, the Jacobian's columns, the tool points `[H]`.
    joints: Vec<f64>,
    columns: Vec<Vector3<f64>>,
    tool: Vec<Vector3<f64>>,
    /// `d C / d p_h` per action, for the tool-point costs.
    dp: Vec<Vector3<f64>>,
    horizon: usize,
}

impl Costs {
    /// Binds `terms` to `robot` for a policy commanding `policy_joints` with chunks of `horizon` actions;
    /// `frame` is a frame of the policy (its layout resolves the `*_from` fields). `origin` names the file
    /// and field for errors.
    pub fn new(
        terms: Vec<CostTerm>,
        robot: &Robot,
        policy_joints: &[String],
        horizon: usize,
        frame: &Frame,
        origin: &std::path::Path,
        field: &str,
    ) -> Result<Costs> {
        let mut robot_joint = Vec::with_capacity(policy_joints.len());
        for name in policy_joints {
            let j = robot.joint_index(name).ok_or_else(|| {
                Error::field(origin, field, format!("the policy's joint `{name}` is not in {}", robot.path.display()))
            })?;
            robot_joint.push(j);
        }
        let mut fields = Vec::with_capacity(terms.len());
        let mut weight_fields = Vec::with_capacity(terms.len());
        for (i, t) in terms.iter().enumerate() {
            weight_fields.push(match &t.weight_from {
                Some(name) => {
                    let id = frame.id(name).filter(|id| frame.get(*id).len() == 1).ok_or_else(|| {
                        Error::field(
                            origin,
                            format!("{field}[{i}].weight_from"),
                            format!("reads `{name}`, which must be a one-value named vector of the observation frame"),
                        )
                    })?;
                    Some(id)
                }
                None => None,
            });
            if !t.weight.is_finite() || t.weight < 0.0 {
                return Err(Error::field(origin, format!("{field}[{i}].weight"), "must be finite and >= 0"));
            }
            let id = match t.kind.field() {
                Some(name) => {
                    let id = frame.id(name).ok_or_else(|| {
                        Error::field(
                            origin,
                            format!("{field}[{i}]"),
                            format!("reads the named vector `{name}`, which is not in the observation frame"),
                        )
                    })?;
                    let size = frame.get(id).len();
                    if !(2..=3).contains(&size) {
                        return Err(Error::field(
                            origin,
                            format!("{field}[{i}]"),
                            format!("`{name}` has {size} values; a point needs 2 (z = 0) or 3"),
                        ));
                    }
                    Some(id)
                }
                None => None,
            };
            fields.push(id);
            if t.kind.uses_tool() && robot.chain.links.is_empty() {
                return Err(Error::field(
                    origin,
                    format!("{field}[{i}]"),
                    format!("`{}` needs the tool point, and {} declares no chain", t.kind.name(), robot.path.display()),
                ));
            }
        }
        let link_column =
            robot.chain.joint_index.iter().map(|j| robot_joint.iter().position(|r| r == j)).collect::<Vec<_>>();
        let limits = robot_joint.iter().map(|j| robot.joints[*j].position_limits_rad).collect();
        Ok(Costs {
            terms,
            fields,
            weight_fields,
            columns: vec![Vector3::zeros(); robot.chain.links.len()],
            chain: robot.chain.clone(),
            robot_joint,
            link_column,
            limits,
            joints: robot.default_pose(),
            tool: vec![Vector3::zeros(); horizon],
            dp: vec![Vector3::zeros(); horizon],
            horizon,
        })
    }

    pub fn terms(&self) -> &[CostTerm] {
        &self.terms
    }

    /// Sets a term's weight (e.g. from a parameter change while running).
    pub fn set_weight(&mut self, term: usize, weight: f64) {
        if let Some(t) = self.terms.get_mut(term) {
            t.weight = weight;
        }
    }

    /// Whether any term can act: a nonzero weight, or one set while running (`weight_from`), and
    /// `rtc_prefix` only with a prefix.
    pub fn active(&self, rtc: bool) -> bool {
        self.terms
            .iter()
            .any(|t| (t.weight != 0.0 || t.weight_from.is_some()) && (rtc || t.kind != CostKind::RtcPrefix))
    }

    /// Term `i`'s weight now: its `weight_from` value when the frame has a usable one, else its own.
    fn weight(&self, i: usize, ctx: &CostContext<'_>) -> f64 {
        if let (Some(id), Some(frame)) = (self.weight_fields[i], ctx.frame) {
            let v = frame.get(id)[0] as f64;
            if v.is_finite() && v >= 0.0 {
                return v;
            }
        }
        self.terms[i].weight
    }

    /// The point a `*_from` term reads, or its fixed value.
    fn point(&self, term: usize, fixed: [f64; 3], ctx: &CostContext<'_>) -> Vector3<f64> {
        if let (Some(id), Some(frame)) = (self.fields[term], ctx.frame) {
            let v = frame.get(id);
            if v.iter().all(|x| x.is_finite()) {
                return Vector3::new(v[0] as f64, v[1] as f64, v.get(2).copied().unwrap_or(0.0) as f64);
            }
        }
        Vector3::from(fixed)
    }

    /// The total cost of `q` (`[H, A]`, radians), and `grad += d cost / d q`. Terms of weight zero are not
    /// evaluated. Allocates nothing.
    pub fn evaluate(&mut self, q: &[f64], ctx: &CostContext<'_>, grad: &mut [f64]) -> f64 {
        let a = self.robot_joint.len();
        let h_len = self.horizon;
        debug_assert_eq!(q.len(), h_len * a);
        let mut total = 0.0;
        let needs_tool = (0..self.terms.len()).any(|i| self.terms[i].kind.uses_tool() && self.weight(i, ctx) != 0.0);
        if needs_tool {
            for h in 0..h_len {
                for (c, j) in self.robot_joint.iter().enumerate() {
                    self.joints[*j] = q[h * a + c];
                }
                self.tool[h] = self.chain.tool_position(&self.joints);
                self.dp[h] = Vector3::zeros();
            }
        }
        for ti in 0..self.terms.len() {
            let w = self.weight(ti, ctx);
            if w == 0.0 {
                continue;
            }
            match &self.terms[ti].kind {
                CostKind::JointLimits { margin_rad } => {
                    let margin = *margin_rad;
                    for (i, v) in q.iter().enumerate() {
                        let (lo, hi) = self.limits[i % a];
                        let below = lo + margin - v;
                        let above = v - (hi - margin);
                        if below > 0.0 {
                            total += w * below * below;
                            grad[i] -= w * 2.0 * below;
                        }
                        if above > 0.0 {
                            total += w * above * above;
                            grad[i] += w * 2.0 * above;
                        }
                    }
                }
                CostKind::Workspace { min_m: min, max_m: max } => {
                    for h in 0..h_len {
                        let p = self.tool[h];
                        for ax in 0..3 {
                            let below = min[ax] - p[ax];
                            let above = p[ax] - max[ax];
                            if below > 0.0 {
                                total += w * below * below;
                                self.dp[h][ax] -= w * 2.0 * below;
                            }
                            if above > 0.0 {
                                total += w * above * above;
                                self.dp[h][ax] += w * 2.0 * above;
                            }
                        }
                    }
                }
                CostKind::KeepOut { center_m, radius_m, .. } => {
                    let (c, radius) = (self.point(ti, *center_m, ctx), *radius_m);
                    for h in 0..h_len {
                        let d = self.tool[h] - c;
                        let dist = d.norm();
                        let pen = radius - dist;
                        if pen > 0.0 && dist > 1e-12 {
                            total += w * pen * pen;
                            self.dp[h] -= d * (w * 2.0 * pen / dist);
                        }
                    }
                }
                CostKind::Goal { target_m, every_action, .. } => {
                    let (g, every) = (self.point(ti, *target_m, ctx), *every_action);
                    let range = if every { 0..h_len } else { h_len.saturating_sub(1)..h_len };
                    for h in range {
                        let d = self.tool[h] - g;
                        total += w * d.norm_squared();
                        self.dp[h] += d * (w * 2.0);
                    }
                }
                CostKind::Smoothness => {
                    for h in 1..h_len.saturating_sub(1) {
                        for c in 0..a {
                            let d = q[(h + 1) * a + c] - 2.0 * q[h * a + c] + q[(h - 1) * a + c];
                            total += w * d * d;
                            grad[(h - 1) * a + c] += w * 2.0 * d;
                            grad[h * a + c] -= w * 4.0 * d;
                            grad[(h + 1) * a + c] += w * 2.0 * d;
                        }
                    }
                }
                CostKind::RtcPrefix => {
                    if let Some((prev, weights)) = ctx.rtc {
                        for (i, v) in q.iter().enumerate() {
                            let wi = weights[i / a] as f64;
                            if wi > 0.0 {
                                let d = v - prev[i];
                                total += w * wi * d * d;
                                grad[i] += w * wi * 2.0 * d;
                            }
                        }
                    }
                }
            }
        }
        if needs_tool {
            // Chain rule through the tool point: d C / d q_h = J_h^T d C / d p_h.
            for h in 0..h_len {
                if self.dp[h] == Vector3::zeros() {
                    continue;
                }
                for (c, j) in self.robot_joint.iter().enumerate() {
                    self.joints[*j] = q[h * a + c];
                }
                self.chain.tool_jacobian(&self.joints, &mut self.columns);
                for (link, col) in self.link_column.iter().zip(&self.columns) {
                    if let Some(c) = link {
                        grad[h * a + c] += col.dot(&self.dp[h]);
                    }
                }
            }
        }
        total
    }
}
