//! Steering parameters a running `coxswain serve` lets others set over Zenoh, each within the bounds its
//! deployment declares (`[params]`), and nothing else.
//!
//! | name | what it sets | needs |
//! |------|--------------|-------|
//! | `candidates` | chunks sampled per inference (a whole number) | a generative policy |
//! | `guidance_scale` | `[steering.guidance] scale` | cost guidance |
//! | `guidance_cap` | `[steering.guidance] cap` | cost guidance |
//! | `residual_alpha` | `[steering.residual] alpha` | a residual (chunk or tick rate) |
//!
//! A change is never written into a running stage: the running manifest with the new values is built into a
//! new policy beside the running one, checked like a hot-swapped model (a test inference with finite output
//! within the chunk budget), swapped in at a chunk boundary and watched, so a value that makes the robot
//! misbehave is rolled back like a bad model.

use std::collections::BTreeMap;
use std::path::Path;

use coxswain::policy::Manifest;

/// The parameters there are, in the order they are reported.
pub const NAMES: [&str; 4] = ["candidates", "guidance_scale", "guidance_cap", "residual_alpha"];

/// One declared parameter: its name and its closed range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub name: &'static str,
    pub low: f64,
    pub high: f64,
}

/// The `[params]` table checked on its own: known names, finite ranges with `low <= high`, whole numbers
/// for `candidates` (at least 1).
pub fn bounds(path: &Path, raw: &BTreeMap<String, [f64; 2]>) -> anyhow::Result<Vec<Bound>> {
    let mut out = Vec::new();
    for (name, &[low, high]) in raw {
        let Some(&known) = NAMES.iter().find(|n| **n == name.as_str()) else {
            anyhow::bail!("{}: params.{name}: no such parameter (there are {})", path.display(), NAMES.join(", "));
        };
        if !(low.is_finite() && high.is_finite() && low <= high) {
            anyhow::bail!("{}: params.{name}: [{low}, {high}] is not a range [low, high]", path.display());
        }
        if known == "candidates" && (low < 1.0 || low.fract() != 0.0 || high.fract() != 0.0) {
            anyhow::bail!("{}: params.candidates: [{low}, {high}] must be whole numbers of at least 1", path.display());
        }
        out.push(Bound { name: known, low, high });
    }
    Ok(out)
}

/// The value of `name` in a running policy (`candidates` is the policy's), or why it has none.
pub fn value(m: &Manifest, candidates: usize, name: &str) -> Result<f64, String> {
    let st = &m.steering;
    let guidance = || st.guidance.as_ref().ok_or_else(|| format!("{} has no [steering.guidance]", m.name));
    match name {
        "candidates" if m.kind.is_generative() => Ok(candidates as f64),
        "candidates" => Err(format!("{} is not a generative policy: it makes one chunk per inference", m.name)),
        "guidance_scale" => Ok(guidance()?.scale),
        "guidance_cap" => Ok(guidance()?.cap),
        "residual_alpha" => {
            st.residual.as_ref().map(|r| r.alpha).ok_or_else(|| format!("{} has no [steering.residual]", m.name))
        }
        other => Err(format!("no such parameter `{other}`")),
    }
}

/// Every declared parameter must exist in the policy, and its value there must lie within its bounds.
pub fn check(path: &Path, bounds: &[Bound], m: &Manifest, candidates: usize) -> anyhow::Result<()> {
    for b in bounds {
        let v =
            value(m, candidates, b.name).map_err(|e| anyhow::anyhow!("{}: params.{}: {e}", path.display(), b.name))?;
        if !(b.low..=b.high).contains(&v) {
            anyhow::bail!(
                "{}: params.{}: the policy runs with {v}, outside the declared [{}, {}]",
                path.display(),
                b.name,
                b.low,
                b.high
            );
        }
    }
    Ok(())
}

/// A request's changes checked against the bounds: every name declared, every value finite and in range.
pub fn changes(bounds: &[Bound], set: &BTreeMap<String, f64>) -> Result<Vec<(&'static str, f64)>, String> {
    if set.is_empty() {
        return Err("nothing to set".into());
    }
    let mut out = Vec::new();
    for (name, &v) in set {
        let Some(b) = bounds.iter().find(|b| b.name == name.as_str()) else {
            let declared: Vec<&str> = bounds.iter().map(|b| b.name).collect();
            return Err(format!(
                "{name}: not settable here (the deployment's [params] declares {})",
                if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
            ));
        };
        if !v.is_finite() || v < b.low || v > b.high {
            return Err(format!("{name} = {v}: outside the declared [{}, {}]", b.low, b.high));
        }
        if b.name == "candidates" && v.fract() != 0.0 {
            return Err(format!("candidates = {v}: must be a whole number"));
        }
        out.push((b.name, v));
    }
    Ok(out)
}

/// The running manifest and candidate count with `changes` applied (checked with [`changes`] first).
pub fn apply(m: &Manifest, candidates: usize, changes: &[(&str, f64)]) -> Result<(Manifest, usize), String> {
    let (mut m, mut n) = (m.clone(), candidates);
    for &(name, v) in changes {
        value(&m, n, name)?;
        let st = &mut m.steering;
        match name {
            "candidates" => n = v as usize,
            "guidance_scale" => st.guidance.as_mut().map(|g| g.scale = v).unwrap_or_default(),
            "guidance_cap" => st.guidance.as_mut().map(|g| g.cap = v).unwrap_or_default(),
            "residual_alpha" => st.residual.as_mut().map(|r| r.alpha = v).unwrap_or_default(),
            other => return Err(format!("no such parameter `{other}`")),
        }
    }
    Ok((m, n))
}

/// Every declared parameter's value and bounds, as the params query answers.
pub fn report(bounds: &[Bound], m: &Manifest, candidates: usize) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for b in bounds {
        let v = value(m, candidates, b.name).map_or(serde_json::Value::Null, serde_json::Value::from);
        out.insert(b.name.to_string(), serde_json::json!({"value": v, "low": b.low, "high": b.high}));
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn b(name: &'static str, low: f64, high: f64) -> Bound {
        Bound { name, low, high }
    }

    #[test]
    fn a_change_outside_its_bounds_or_of_an_undeclared_parameter_is_refused_with_the_name() {
        let bounds = [b("residual_alpha", 0.0, 1.0), b("candidates", 1.0, 4.0)];
        let set = |k: &str, v: f64| BTreeMap::from([(k.to_string(), v)]);
        assert_eq!(changes(&bounds, &set("residual_alpha", 0.5)).unwrap(), vec![("residual_alpha", 0.5)]);
        let e = changes(&bounds, &set("residual_alpha", 1.5)).unwrap_err();
        assert!(e.contains("residual_alpha = 1.5: outside the declared [0, 1]"), "{e}");
        let e = changes(&bounds, &set("guidance_scale", 1.0)).unwrap_err();
        assert!(e.contains("guidance_scale: not settable here") && e.contains("residual_alpha, candidates"), "{e}");
        assert!(changes(&bounds, &set("candidates", 2.5)).unwrap_err().contains("whole number"));
        assert!(changes(&bounds, &set("residual_alpha", f64::NAN)).is_err());
        assert!(changes(&bounds, &BTreeMap::new()).is_err());
    }

    fn model(name: &str) -> Manifest {
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name)).unwrap()
    }

    #[test]
    fn applying_a_residual_alpha_changes_only_that_value_and_a_policy_without_a_residual_refuses_it() {
        let m = model("reach-dp-residual");
        let before = value(&m, 1, "residual_alpha").unwrap();
        let (next, n) = apply(&m, 1, &[("residual_alpha", 0.25)]).unwrap();
        assert_eq!((value(&next, n, "residual_alpha").unwrap(), n), (0.25, 1));
        assert_ne!(before, 0.25);
        assert_eq!(next.steering.noise, m.steering.noise);
        let e = apply(&model("reach-dp"), 1, &[("residual_alpha", 0.25)]).unwrap_err();
        assert!(e.contains("has no [steering.residual]"), "{e}");
        let (_, n) = apply(&model("reach-dp"), 1, &[("candidates", 3.0)]).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn a_declared_parameter_the_policy_runs_outside_of_fails_the_check() {
        let m = model("reach-dp-guided");
        let scale = value(&m, 1, "guidance_scale").unwrap();
        let p = Path::new("d.toml");
        assert!(check(p, &[b("guidance_scale", 0.0, scale)], &m, 1).is_ok());
        let e = check(p, &[b("guidance_scale", 0.0, scale / 2.0)], &m, 1).unwrap_err().to_string();
        assert!(e.contains("params.guidance_scale: the policy runs with"), "{e}");
        let e = check(p, &[b("residual_alpha", 0.0, 1.0)], &m, 1).unwrap_err().to_string();
        assert!(e.contains("params.residual_alpha") && e.contains("has no [steering.residual]"), "{e}");
    }

    #[test]
    fn a_params_table_with_an_unknown_name_or_a_reversed_range_names_the_field() {
        let p = Path::new("deploy.toml");
        let raw = |k: &str, r: [f64; 2]| BTreeMap::from([(k.to_string(), r)]);
        let e = bounds(p, &raw("alpha", [0.0, 1.0])).unwrap_err().to_string();
        assert!(e.contains("deploy.toml: params.alpha: no such parameter"), "{e}");
        let e = bounds(p, &raw("guidance_scale", [2.0, 1.0])).unwrap_err().to_string();
        assert!(e.contains("params.guidance_scale: [2, 1] is not a range"), "{e}");
        assert!(bounds(p, &raw("candidates", [0.0, 4.0])).is_err());
        assert_eq!(bounds(p, &raw("guidance_cap", [0.0, 1.0])).unwrap(), vec![b("guidance_cap", 0.0, 1.0)]);
    }
}
