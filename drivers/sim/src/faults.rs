//! Faults the simulator injects into the joint state it publishes, to test that the runtime notices.
//!
//! Set in-process with [`crate::SimHandle::set_faults`], or over Zenoh by putting text on
//! `robot/<id>/sim/faults`, e.g. `drop=0.2 delay_ms=5` or `nan=1` or `clear`:
//!
//! | key | effect |
//! |---|---|
//! | `drop=P` | each state message is lost with probability P |
//! | `delay_ms=D` | each state message leaves D ms late |
//! | `freeze=1` | the published positions stop changing (a stuck encoder); sequence numbers still advance |
//! | `nan=1` | positions are NaN |
//! | `garbage=P` | a message is replaced by random bytes with probability P |
//! | `reorder=1` | consecutive messages leave in swapped pairs |
//! | `silence=1` | nothing is published (a dead driver) |
//! | `clear` | all off |

use std::str::FromStr;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub drop_probability: f64,
    pub delay_ms: f64,
    pub freeze: bool,
    pub nan: bool,
    pub garbage_probability: f64,
    pub reorder: bool,
    pub silence: bool,
}

impl Faults {
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

impl FromStr for Faults {
    type Err = String;

    /// Parses `key=value` words; keys not given stay off. `clear` (or an empty string) is no fault.
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for word in s.split_whitespace() {
            if word == "clear" {
                f = Faults::default();
                continue;
            }
            let (k, v) = word.split_once('=').ok_or_else(|| format!("`{word}`: expected key=value or clear"))?;
            let num = || v.parse::<f64>().map_err(|_| format!("`{word}`: `{v}` is not a number"));
            let flag = || match v {
                "1" | "true" | "on" => Ok(true),
                "0" | "false" | "off" => Ok(false),
                _ => Err(format!("`{word}`: `{v}` is not 0/1")),
            };
            let prob = |p: f64| {
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(format!("`{word}`: a probability is between 0 and 1"))
                }
            };
            match k {
                "drop" => f.drop_probability = prob(num()?)?,
                "delay_ms" => {
                    let d = num()?;
                    if !(0.0..=10_000.0).contains(&d) {
                        return Err(format!("`{word}`: delay must be 0..10000 ms"));
                    }
                    f.delay_ms = d;
                }
                "freeze" => f.freeze = flag()?,
                "nan" => f.nan = flag()?,
                "garbage" => f.garbage_probability = prob(num()?)?,
                "reorder" => f.reorder = flag()?,
                "silence" => f.silence = flag()?,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (drop, delay_ms, freeze, nan, garbage, reorder, silence, clear)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let f: Faults = "drop=0.2 delay_ms=5 freeze=1 garbage=0.1 reorder=on".parse().unwrap_or_default();
        assert_eq!(
            f,
            Faults {
                drop_probability: 0.2,
                delay_ms: 5.0,
                freeze: true,
                garbage_probability: 0.1,
                reorder: true,
                ..Default::default()
            }
        );
        assert_eq!("nan=1 clear".parse::<Faults>(), Ok(Faults::default()));
        assert!("drop=2".parse::<Faults>().is_err());
        assert!("explode=1".parse::<Faults>().is_err());
        assert!("freeze".parse::<Faults>().is_err());
    }
}
