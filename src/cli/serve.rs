//! `lenet5 serve`: the drawing page and the JSON API on the user's own machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lenet5::deploy::{Engine, Weights};
use lenet5::serve::{AppState, BUNDLED_MODEL, BUNDLED_MODEL_NAME, serve};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::infer::Predictor;
use lenet5_core::nn::Head;

use super::{CliResult, DataArgs};

/// Where `lenet5 train` leaves its best weights by default.
const TRAINED: &str = "save_model/best.safetensors";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Trained weights: a .safetensors checkpoint (float, or int8 from `lenet5 quantize`), or a PyTorch .pth
    /// state_dict (read with the sigmoid head). Default: save_model/best.safetensors, else, before any model is
    /// trained there, the MNIST model bundled with lenet5.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Address to listen on (loopback by default; use 0.0.0.0:PORT to accept other machines).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Resolves on the first Ctrl-C or SIGTERM, after which a second one exits at once.
async fn shutdown_signal() {
    signal().await;
    eprintln!(
        "stopping: finishing the requests in flight (at most {} s; Ctrl-C again exits at once)",
        lenet5::serve::SHUTDOWN_GRACE.as_secs()
    );
    tokio::spawn(async {
        signal().await;
        eprintln!("exiting now");
        std::process::exit(130);
    });
}

/// The weights to serve (float or int8) and their name: `--weights`, else the default run's, else the bundled
/// model.
fn weights(flag: Option<PathBuf>) -> CliResult<(Engine, String)> {
    let path = match flag {
        Some(path) => path,
        None if Path::new(TRAINED).exists() => PathBuf::from(TRAINED),
        None => {
            eprintln!("note: no {TRAINED} yet (`lenet5 train` makes one); serving {BUNDLED_MODEL_NAME}");
            let ck = Checkpoint::from_bytes(BUNDLED_MODEL, Path::new(BUNDLED_MODEL_NAME))?;
            return Ok((Predictor::new(ck).into(), BUNDLED_MODEL_NAME.to_string()));
        }
    };
    let name = path.display().to_string();
    Ok((Weights::load(&path, Head::Sigmoid)?.into(), name))
}

/// Lets the server hold as many connections as the system allows this process: the soft limit of open files
/// (often 1,024) raised to the hard one.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

pub fn run(a: ServeArgs) -> CliResult {
    raise_open_file_limit();
    // The address first: a server that cannot listen says so before it reads any weights or data.
    let listener = std::net::TcpListener::bind(&a.addr).map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
    listener.set_nonblocking(true).map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
    let (engine, weights_name) = weights(a.weights)?;
    // The test set feeds the "random test image" button; the page works without it.
    let test = match a.data.load_test_for(engine.checkpoint()) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("note: no test images for the random-image button ({e})");
            None
        }
    };
    // The page and the API name the weights by their file name only: where they lie is the server's business.
    let shown = match Path::new(&weights_name).file_name() {
        Some(file) if Path::new(&weights_name).is_file() => file.to_string_lossy().into_owned(),
        _ => weights_name.clone(),
    };
    // The training page's data sets: the known ones under the data root, checked once, here.
    let (offered, refused) = lenet5::web::available(&a.data.root());
    for why in &refused {
        eprintln!("note: the training page leaves out {}", lenet5::text::printable(&why.to_string()));
    }
    let state = Arc::new(AppState::new(engine, test, shown).with_datasets(offered));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))?;
    rt.block_on(async {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| format!("cannot listen on {}: {e}", a.addr))?;
        println!(
            "serving {} on http://{addr}/ and a page to train LeNet-5 in the browser on http://{addr}/train (Ctrl-C to stop)",
            weights_name
        );
        serve(listener, state, shutdown_signal()).await.map_err(|e| format!("server error: {e}"))?;
        println!("stopped");
        Ok::<(), super::CliError>(())
    })
}
