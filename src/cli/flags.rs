//! The run specification's settings as flags, made from [`SETTINGS`]: each setting `name` is the flag
//! `--name-with-dashes`, with the setting's help, its default shown from [`RunSpec::default`], and its value
//! read as the setting's kind. No flag restates a default or a check: the specification holds both.
//!
//! - [`RunFlags`]: every setting, one value each (`lenet5 train`).
//! - [`DataFlags`]: the settings that say where data are and how to read them (`eval`, `predict`, ...).
//! - [`SweepFlags`]: every setting but the run's directory and threads, each given a comma-separated list of
//!   values to sweep (`lenet5 sweep`).

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde_json::{Map, Value};

use lenet5_core::spec::{Kind, RunSpec, SETTINGS, SettingInfo};

/// The settings that say where a command's data are and how to read them.
pub const DATA_SETTINGS: [&str; 8] =
    ["data", "dataset", "no_download", "preprocess", "val_split", "split_seed", "label_offset", "skip_bad_images"];

/// The settings a sweep sets for each trial itself, and so takes no values for.
pub const SWEEP_SETS: [&str; 4] = ["out", "force", "resume", "threads"];

/// The flag of setting `name`.
pub fn flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

/// Help text: the setting's, with its default (or what leaving it unset means).
fn help(info: &SettingInfo) -> String {
    let default = match (info.unset, &RunSpec::default().to_json()[info.name]) {
        (Some(unset), _) => unset.to_string(),
        (None, Value::Bool(_)) => return info.help.to_string(),
        (None, Value::String(s)) => s.clone(),
        (None, Value::Array(items)) => items.iter().map(Value::to_string).collect::<Vec<_>>().join(","),
        (None, v) => v.to_string(),
    };
    format!("{} [default: {default}]", info.help)
}

/// The flag of one setting: a switch, a single value, or (for a sweep) a list of values.
fn arg(info: &'static SettingInfo, list: bool) -> Arg {
    let kind = info.kind;
    let mut arg = Arg::new(info.name).long(info.name.replace('_', "-")).help(help(info));
    if let Kind::Choice(names) = kind {
        arg = arg.value_name(names.join("|"));
    } else if !info.value_name.is_empty() {
        arg = arg.value_name(info.value_name);
    }
    let parsed = arg.clone().value_parser(move |s: &str| kind.value_from_text(s)).allow_negative_numbers(true);
    match (kind, list) {
        (Kind::Switch, false) => arg.action(ArgAction::SetTrue),
        // A pair holds a comma itself: a sweep takes one.
        (_, false) | (Kind::Pair, true) => parsed,
        (Kind::Switch, true) => parsed.value_name("off|on").value_delimiter(',').action(ArgAction::Append),
        (_, true) => parsed.value_delimiter(',').action(ArgAction::Append),
    }
}

/// The settings of `names` (every one when `None`, but `except`) as flags of `cmd`.
fn add(cmd: Command, names: Option<&[&str]>, except: &[&str], list: bool) -> Command {
    let chosen = SETTINGS.iter().filter(|s| names.is_none_or(|n| n.contains(&s.name)) && !except.contains(&s.name));
    chosen.fold(cmd, |cmd, info| cmd.arg(arg(info, list)))
}

/// The settings given on the command line, as `name -> value` (a switch only when given).
fn given(m: &ArgMatches, names: Option<&[&str]>, except: &[&str]) -> Map<String, Value> {
    let mut values = Map::new();
    for info in SETTINGS.iter().filter(|s| names.is_none_or(|n| n.contains(&s.name)) && !except.contains(&s.name)) {
        if info.kind == Kind::Switch {
            if m.get_flag(info.name) {
                values.insert(info.name.to_string(), Value::Bool(true));
            }
        } else if let Some(v) = m.get_one::<Value>(info.name) {
            values.insert(info.name.to_string(), v.clone());
        }
    }
    values
}

/// Every setting of a run as a flag; holds the settings given.
#[derive(Clone, Debug, Default)]
pub struct RunFlags {
    pub given: Map<String, Value>,
}

impl FromArgMatches for RunFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(RunFlags { given: given(m, None, &[]) })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.given.extend(given(m, None, &[]));
        Ok(())
    }
}

impl Args for RunFlags {
    fn augment_args(cmd: Command) -> Command {
        add(cmd, None, &[], false)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The data settings as flags; holds the settings given.
#[derive(Clone, Debug, Default)]
pub struct DataFlags {
    pub given: Map<String, Value>,
}

impl DataFlags {
    /// The specification of these data settings (the others the recipe's), checked as the flags were read.
    pub fn spec(&self) -> RunSpec {
        RunSpec::default().with_json(&Value::Object(self.given.clone())).expect("checked when the flags were read")
    }
}

/// The settings given, or clap's error for a value its setting cannot hold (a label offset of 70000).
fn checked(given: Map<String, Value>) -> Result<Map<String, Value>, clap::Error> {
    match RunSpec::default().with_json(&Value::Object(given.clone())) {
        Ok(_) => Ok(given),
        Err(lenet5_core::Error::SettingValue { name, reason }) => Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("invalid value for {}: {reason}\n", flag(&name)),
        )),
        Err(e) => Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))),
    }
}

impl FromArgMatches for DataFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(DataFlags { given: checked(given(m, Some(&DATA_SETTINGS), &[]))? })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.given.extend(checked(given(m, Some(&DATA_SETTINGS), &[]))?);
        Ok(())
    }
}

impl Args for DataFlags {
    fn augment_args(cmd: Command) -> Command {
        add(cmd, Some(&DATA_SETTINGS), &[], false)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Every setting but those a sweep sets itself, each taking a list of values; holds the lists given, in the
/// order of [`SETTINGS`].
#[derive(Clone, Debug, Default)]
pub struct SweepFlags {
    pub axes: Vec<(&'static str, Vec<Value>)>,
}

impl FromArgMatches for SweepFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = SweepFlags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for info in SETTINGS.iter().filter(|s| !SWEEP_SETS.contains(&s.name)) {
            if let Some(values) = m.get_many::<Value>(info.name) {
                self.axes.push((info.name, values.cloned().collect()));
            }
        }
        Ok(())
    }
}

impl Args for SweepFlags {
    fn augment_args(cmd: Command) -> Command {
        add(cmd, None, &SWEEP_SETS, true)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(no_binary_name = true)]
    struct Run {
        #[command(flatten)]
        flags: RunFlags,
    }

    #[derive(clap::Parser)]
    #[command(no_binary_name = true)]
    struct Data {
        #[command(flatten)]
        _flags: DataFlags,
    }

    #[derive(clap::Parser)]
    #[command(no_binary_name = true)]
    struct Sweep {
        #[command(flatten)]
        flags: SweepFlags,
    }

    #[test]
    fn every_setting_is_a_flag_with_its_default_in_the_help() {
        use clap::CommandFactory;
        let cmd = Run::command();
        for info in SETTINGS {
            let arg = cmd.get_arguments().find(|a| a.get_id() == info.name).expect(info.name);
            assert_eq!(format!("--{}", arg.get_long().unwrap()), flag(info.name));
            let help = arg.get_help().unwrap().to_string();
            assert!(help.starts_with(info.help), "{}: {help}", info.name);
        }
        let help =
            |name: &str| cmd.get_arguments().find(|a| a.get_id() == name).unwrap().get_help().unwrap().to_string();
        assert!(help("lr").ends_with("[default: 0.001]"), "{}", help("lr"));
        assert!(help("scale").ends_with("[default: 0.9,1.1]"), "{}", help("scale"));
        assert!(help("out").ends_with("[default: save_model]"), "{}", help("out"));
    }

    #[test]
    fn flags_give_only_what_was_given_as_the_settings_kinds() {
        use clap::Parser;
        let run = Run::try_parse_from(["--lr", "0.01", "--augment", "--scale", "0.8,1.2", "--head", "logits"]).unwrap();
        let spec = RunSpec::default().with_json(&Value::Object(run.flags.given.clone())).unwrap();
        assert_eq!((spec.lr, spec.augment, spec.scale, spec.head.name()), (0.01, true, [0.8, 1.2], "logits"));
        assert_eq!(run.flags.given.len(), 4);
        let e = Run::try_parse_from(["--lr", "fast"]).err().unwrap().to_string();
        assert!(e.contains("--lr") && e.contains("expected a number"), "{e}");
        let e = Run::try_parse_from(["--head", "tanh"]).err().unwrap().to_string();
        assert!(e.contains("sigmoid, logits"), "{e}");
        let e = Data::try_parse_from(["--label-offset", "70000"]).err().unwrap().to_string();
        assert!(e.contains("invalid value for --label-offset") && e.contains("u16"), "{e}");
        // Out of range is the specification's to say, once.
        let run = Run::try_parse_from(["--lr", "-1"]).unwrap();
        assert!(RunSpec::default().with_json(&Value::Object(run.flags.given)).unwrap().validate().is_err());
    }

    #[test]
    fn a_sweep_takes_lists_of_values_for_every_setting_but_its_own() {
        use clap::Parser;
        let sweep = Sweep::try_parse_from(["--lr", "0.1,0.01", "--augment", "off,on", "--scale", "0.8,1.2"]).unwrap();
        let axes: Vec<(&str, usize)> = sweep.flags.axes.iter().map(|(n, v)| (*n, v.len())).collect();
        assert_eq!(axes, [("lr", 2), ("augment", 2), ("scale", 1)]);
        assert!(Sweep::try_parse_from(["--threads", "2"]).is_err());
    }
}
