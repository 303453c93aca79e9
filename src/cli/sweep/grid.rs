//! A sweep's grid: every combination of the values given for each setting, made one at a time from its index
//! (the last setting varies fastest), so that a grid of any size costs nothing until its trials run.

use std::path::{Path, PathBuf};

use serde_json::Value;

use lenet5_core::spec::{RunSpec, ValidSpec};

use super::super::CliResult;
use super::super::flags::flag;

/// Most trials a sweep runs unless `--max-trials` allows more.
pub const DEFAULT_MAX_TRIALS: u64 = 10_000;

/// The settings every trial shares, and the values swept.
pub struct Grid {
    /// The specification every trial starts from.
    pub base: RunSpec,
    /// Each swept setting with its values, in the order of the settings.
    pub axes: Vec<(&'static str, Vec<Value>)>,
    /// Trials in all: the product of the axes' lengths.
    pub len: u64,
}

/// One trial: its index in the grid, and its specification (its run directory in `out`).
pub struct Trial {
    pub index: u64,
    pub spec: ValidSpec,
}

impl Trial {
    /// The run directory of trial `index` of a sweep in `out`.
    pub fn dir(out: &Path, index: u64) -> PathBuf {
        out.join(format!("trial-{index:03}"))
    }
}

impl Grid {
    /// The grid of `axes` over `base`; more than `max_trials` trials is an error.
    pub fn new(base: RunSpec, axes: Vec<(&'static str, Vec<Value>)>, max_trials: Option<u64>) -> CliResult<Grid> {
        let len = axes.iter().try_fold(1u64, |n, (_, values)| n.checked_mul(values.len() as u64));
        let limit = max_trials.unwrap_or(DEFAULT_MAX_TRIALS);
        match len {
            Some(len) if len <= limit => Ok(Grid { base, axes, len }),
            _ => {
                let count = len.map_or("more than 2^64".to_string(), |n| n.to_string());
                let hint = match max_trials {
                    None => format!("; pass --max-trials {count} to run them all"),
                    Some(_) => String::new(),
                };
                Err(format!("the grid has {count} trials, more than the limit of {limit}{hint}").into())
            }
        }
    }

    /// The settings of trial `index`: one value of each axis.
    pub fn values(&self, index: u64) -> Vec<(&'static str, Value)> {
        let mut rest = index;
        let mut values: Vec<(&'static str, Value)> = self
            .axes
            .iter()
            .rev()
            .map(|(name, values)| {
                let n = values.len() as u64;
                let value = values[(rest % n) as usize].clone();
                rest /= n;
                (*name, value)
            })
            .collect();
        values.reverse();
        values
    }

    /// Trial `index` of the sweep in `out`, checked as `lenet5 train` checks a run.
    pub fn trial(&self, index: u64, out: &Path) -> CliResult<Trial> {
        let mut spec = self.base.clone();
        for (name, value) in self.values(index) {
            spec = spec.with(name, value)?;
        }
        spec.out = Trial::dir(out, index);
        let spec = spec.validate().map_err(|e| {
            let settings: Vec<String> =
                self.values(index).iter().map(|(n, v)| format!("{} {}", flag(n), show(v))).collect();
            format!("trial-{index:03} ({}): {}", settings.join(" "), super::super::message(&e.into()))
        })?;
        Ok(Trial { index, spec })
    }
}

/// A setting's value as a table shows it: text without quotes (and safe for a terminal), nothing for unset.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => lenet5::text::printable(s).into_owned(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_made_from_their_index_with_the_last_setting_fastest() {
        let axes = vec![("lr", vec![0.1.into(), 0.2.into()]), ("seed", vec![1.into(), 2.into(), 3.into()])];
        let grid = Grid::new(RunSpec::default(), axes, None).unwrap();
        assert_eq!(grid.len, 6);
        let seeds: Vec<Value> = (0..6).map(|i| grid.values(i)[1].1.clone()).collect();
        assert_eq!(seeds, [1, 2, 3, 1, 2, 3].map(Value::from));
        assert_eq!(grid.values(4)[0].1, Value::from(0.2));
        let trial = grid.trial(5, Path::new("s")).unwrap();
        assert_eq!((trial.spec.spec().seed, trial.spec.spec().out.clone()), (3, PathBuf::from("s/trial-005")));
    }

    #[test]
    fn a_grid_larger_than_the_limit_is_refused_before_anything_is_made() {
        let values: Vec<Value> = (0..1000).map(Value::from).collect();
        let axes: Vec<(&str, Vec<Value>)> = vec![("seed", values.clone()), ("epochs", values.clone())];
        let e = Grid::new(RunSpec::default(), axes.clone(), None).err().unwrap().to_string();
        assert!(e.contains("1000000 trials") && e.contains("--max-trials 1000000"), "{e}");
        assert_eq!(Grid::new(RunSpec::default(), axes, Some(1_000_000)).unwrap().len, 1_000_000);
        let huge: Vec<(&str, Vec<Value>)> = (0..8).map(|_| ("seed", values.clone())).collect();
        let e = Grid::new(RunSpec::default(), huge, Some(u64::MAX)).err().unwrap().to_string();
        assert!(e.contains("more than 2^64"), "{e}");
    }
}
