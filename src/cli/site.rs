//! `lenet5 site`: the page that trains LeNet-5 in the browser, as a static site any file server can host.

use std::path::PathBuf;

use super::{CliResult, DataArgs};

#[derive(clap::Args, Debug)]
pub struct SiteArgs {
    /// Directory to write the site into (created if missing; the site's own files in it are replaced).
    #[arg(value_name = "DIR")]
    pub out: PathBuf,
    /// Data root holding the data sets (default: $LENET5_DATA, else ./data); every one of mnist and
    /// fashion-mnist found there is included.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

pub fn run(a: SiteArgs) -> CliResult {
    let root = DataArgs::with_root(a.data).root();
    let site = lenet5::web::write_site(&a.out, &root)?;
    for why in &site.refused {
        eprintln!("note: left out: {}", lenet5::text::printable(why));
    }
    println!(
        "{}: the training page with {} ({:.1} MB); serve it with any static file server, for example\n  python3 -m http.server -d {}",
        site.dir.display(),
        site.datasets.join(" and "),
        site.bytes as f64 / 1e6,
        site.dir.display()
    );
    Ok(())
}
