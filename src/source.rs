//! Where a run's data come from: a known data set under a data root (downloaded when missing, where that is
//! allowed), a directory of IDX files, or an image folder; and how an image folder is read. Every front end (the
//! command line, the Python package) describes its data with a [`DataSource`] and hears what loading does
//! through [`Notices`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::{Dataset, DatasetId, Split};

use crate::error::Result;
use lenet5_core::spec::RunSpec;

use crate::folder::{FolderOptions, FolderReport, is_image_folder, load_folder};

/// What loading data and preparing a run tell the front end, which may show it or not. The library itself
/// never prints.
pub trait Notices: Sync {
    /// A known data set is missing under `root` and is about to be downloaded.
    fn downloading(&self, _dataset: &str, _root: &Path) {}
    /// A file of that download is being fetched from `url`.
    fn fetching(&self, _url: &str) {}
    /// Another image of a folder was decoded (from any thread): `done` of `total`.
    fn decoded(&self, _done: usize, _total: usize) {}
    /// Decoding is over, and these files were left out.
    fn decoding_finished(&self, _report: &FolderReport) {}
    /// A temporary file that a process killed while writing it left in a run directory was removed.
    fn removed_stale(&self, _path: &Path) {}
}

/// Notices nobody hears.
impl Notices for () {}

/// The data a command reads: the data settings of a run specification (`data`, `dataset`, `no_download`,
/// `preprocess`, `val_split`, `split_seed`, `label_offset`, `skip_bad_images`). A setting left `None` means: what
/// the run or the checkpoint recorded, else the default.
#[derive(Clone, Debug)]
pub struct DataSource {
    spec: RunSpec,
}

impl Default for DataSource {
    /// The recipe's: MNIST under the default root, downloaded if missing.
    fn default() -> Self {
        DataSource::of(&RunSpec::default())
    }
}

impl DataSource {
    /// The data settings of `spec`.
    pub fn of(spec: &RunSpec) -> DataSource {
        DataSource { spec: spec.clone() }
    }

    /// The data root: the `data` setting when given, else `$LENET5_DATA`, else `./data`.
    pub fn root(&self) -> PathBuf {
        if let Some(dir) = &self.spec.data {
            return dir.clone();
        }
        match std::env::var_os("LENET5_DATA") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from("data"),
        }
    }

    /// The data set named, else `fallback`, else MNIST.
    pub fn id(&self, fallback: Option<&str>) -> DatasetId {
        DatasetId::parse(self.spec.dataset.as_deref().or(fallback).unwrap_or("mnist"))
    }

    /// Makes sure the `files` of a known data set are on disk (all four, or the test split's), downloading
    /// what is missing where that is allowed.
    fn ensure(&self, id: &DatasetId, files: &'static [&'static str], notices: &dyn Notices) -> Result<()> {
        let root = self.root();
        if let Err(e) = id.locate_files(&root, files) {
            if self.spec.no_download || crate::download::remote(id).is_none() {
                return Err(e.into());
            }
            notices.downloading(&id.name(), &root);
            crate::download::download(id, &root, files, &mut |url| notices.fetching(url))?;
        }
        Ok(())
    }

    /// How to read an image folder: the fields, else what `recorded` (a run's or a checkpoint's data options)
    /// says, else the defaults.
    pub fn folder_options(&self, recorded: &BTreeMap<String, String>) -> FolderOptions {
        FolderOptions::of(&self.spec, recorded)
    }

    /// The label offset of an IDX data set: the field, else the recorded one, else 0.
    fn label_offset(&self, recorded: &BTreeMap<String, String>) -> u16 {
        self.spec.label_offset.or_else(|| recorded.get("label_offset")?.parse().ok()).unwrap_or(0)
    }

    /// Both splits of the data set (`fallback` when none is named; downloaded first if needed and allowed); an
    /// image folder is read as `recorded` says where no field does.
    pub fn load(
        &self,
        fallback: Option<&str>,
        recorded: &BTreeMap<String, String>,
        notices: &dyn Notices,
    ) -> Result<Dataset> {
        let id = self.id(fallback);
        if let DatasetId::Dir(dir) = &id
            && is_image_folder(dir)
        {
            return load_image_folder(dir, &self.folder_options(recorded), notices);
        }
        self.ensure(&id, &DatasetId::FILES, notices)?;
        let data = Dataset::load(&id, &self.root())?;
        Ok(match self.label_offset(recorded) {
            0 => data,
            offset => data.with_label_offset(offset)?,
        })
    }

    /// The test split of the data set `ck` was trained on (unless another is named), for its classes.
    pub fn load_test_for(&self, ck: &Checkpoint, notices: &dyn Notices) -> Result<Split> {
        let id = self.id_for(ck)?;
        let recorded = data_options(ck);
        let test = if let DatasetId::Dir(dir) = &id
            && is_image_folder(dir)
        {
            let data = load_image_folder(dir, &self.folder_options(&recorded), notices)?;
            check_classes(&data, ck)?;
            data.test
        } else if self.label_offset(&recorded) != 0 {
            let data = self.load(Some(&id.name()), &recorded, notices)?;
            check_classes(&data, ck)?;
            data.test
        } else {
            // Only the test split: evaluating never needs (or downloads) the training images.
            self.ensure(&id, &DatasetId::TEST_FILES, notices)?;
            Dataset::load_test(&id, &self.root(), ck.classes())?
        };
        if test.is_empty() {
            return Err(lenet5_core::Error::EmptySplit { dataset: id.name(), split: "test" }.into());
        }
        Ok(test)
    }
}

impl DataSource {
    /// The data set to evaluate `ck` on: the one named, else the one its metadata records when that is a known
    /// data set. A checkpoint never chooses a directory to read: a path comes only from the user.
    pub fn id_for(&self, ck: &Checkpoint) -> Result<DatasetId> {
        let recorded = ck.metadata.get("dataset").map(String::as_str);
        match (self.spec.dataset.is_some(), recorded.map(DatasetId::parse)) {
            (false, Some(DatasetId::Dir(dir))) => Err(lenet5_core::Error::format(
                &dir,
                "the weights were trained on this directory, which their metadata cannot choose to read: name the \
                 data with --dataset (dataset= in Python)",
            )
            .into()),
            _ => Ok(self.id(recorded)),
        }
    }
}

/// The data options a checkpoint records (its `data.<name>` metadata).
pub fn data_options(ck: &Checkpoint) -> BTreeMap<String, String> {
    ck.metadata.iter().filter_map(|(k, v)| Some((k.strip_prefix("data.")?.to_string(), v.clone()))).collect()
}

/// The network of `ck` tells apart the classes of `data`.
fn check_classes(data: &Dataset, ck: &Checkpoint) -> Result<()> {
    if data.class_names.len() != ck.classes() {
        return Err(lenet5_core::Error::ClassCount {
            dataset: data.name.clone(),
            network: ck.classes(),
            data: data.class_names.len(),
        }
        .into());
    }
    Ok(())
}

/// Reads an image folder, telling `notices` of every decoded image and of what was left out.
fn load_image_folder(dir: &Path, options: &FolderOptions, notices: &dyn Notices) -> Result<Dataset> {
    let (data, report) = load_folder(dir, options, &|done, total| notices.decoded(done, total))?;
    notices.decoding_finished(&report);
    Ok(data)
}
