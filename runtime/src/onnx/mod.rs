//! ONNX Runtime, loaded the way users install it: the shared library from the `onnxruntime` wheel on PyPI
//! (or any other build), found at run time through ort's `load-dynamic` feature. Nothing is downloaded.
//!
//! [`OrtRuntime::load`] finds the library in this order and says exactly where it looked when it fails:
//! 1. an explicit path (`--ort-lib`, or a config file),
//! 2. `$ORT_DYLIB_PATH`,
//! 3. the project's own install folder, `.ort/lib/` of the repo (made by `scripts/install-onnxruntime.sh`),
//!    searched upwards from the executable and from the working directory,
//! 4. the system's library paths (`$LD_LIBRARY_PATH`, `/usr/local/lib`, `/usr/lib`, ...).
//!
//! [`SessionConfig`] holds what the robot integrator chooses per deployment: intra-op threads (default 1,
//! so inference never competes with the control thread for cores it does not own), graph optimization
//! level, and the execution providers in order of preference: a session runs on the first one the loaded
//! library has ([`choose_providers`]; [`Graph::execution_provider`] says which), and only a list of which it
//! has none is an error. ONNX Runtime's thread spinning is always off.

mod graph;

pub use graph::{Graph, TensorSpec};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use crate::error::{Error, Result};

/// Where the library that was loaded came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    Explicit,
    EnvVar,
    ProjectInstall,
    System,
}

/// A loaded ONNX Runtime: the process-wide environment that sessions are made from.
#[derive(Debug, Clone)]
pub struct OrtRuntime {
    env: ort::environment::Environment,
    library: PathBuf,
    source: LibrarySource,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();

/// The file name stem every ONNX Runtime build uses on Linux.
const LIB_STEM: &str = "libonnxruntime.so";

impl OrtRuntime {
    /// Finds and loads ONNX Runtime once per process. Later calls return the runtime already loaded; asking
    /// for a different explicit library after that is an error rather than a silent surprise.
    pub fn load(explicit: Option<&Path>) -> Result<&'static OrtRuntime> {
        if let Some(rt) = RUNTIME.get() {
            if let Some(p) = explicit {
                if !same_file(p, &rt.library) {
                    return Err(Error::OrtLibrary(format!(
                        "{} was requested, but {} is already loaded in this process",
                        p.display(),
                        rt.library.display()
                    )));
                }
            }
            return Ok(rt);
        }
        let (library, source) = find_library(explicit)?;
        let builder = ort::init_from(&library).map_err(|e| {
            Error::OrtLibrary(format!(
                "{} could not be loaded: {e}. It must be ONNX Runtime 1.31 or newer built for this machine \
                 ({}); scripts/install-onnxruntime.sh installs the CPU build from PyPI",
                library.display(),
                std::env::consts::ARCH
            ))
        })?;
        let env = builder
            .with_name("coxswain")
            .build()
            .map_err(|e| Error::OrtLibrary(format!("{}: creating the environment failed: {e}", library.display())))?;
        let rt = OrtRuntime { env, library, source };
        Ok(RUNTIME.get_or_init(|| rt))
    }

    /// The ONNX Runtime environment, for callers that build sessions of their own (benches, tools).
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }

    /// The shared library that was loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// How the library was found.
    pub fn source(&self) -> &LibrarySource {
        &self.source
    }

    /// The execution providers compiled into the loaded library (e.g. `CPUExecutionProvider`).
    pub fn available_providers(&self) -> Vec<String> {
        ExecutionProvider::ALL.iter().filter(|ep| ep.is_compiled_in()).map(|ep| ep.ort_name().to_string()).collect()
    }

    /// The providers a session asked to use `config.execution_providers` registers, best first: the ones this
    /// library has, in the order asked (see [`choose_providers`]). A preferred provider the library lacks is
    /// skipped with a warning naming it; a list of which it has none is an error.
    pub fn execution_providers(&self, config: &SessionConfig, path: &Path) -> Result<Vec<ExecutionProvider>> {
        let available = self.available_providers();
        let chosen = choose_providers(&config.execution_providers, &available, &self.library)?;
        if let Some(first) = chosen.first() {
            for ep in config.execution_providers.iter().take_while(|ep| *ep != first) {
                tracing::warn!(
                    target: "coxswain",
                    "execution provider `{}` is not in {} (it has: {}); {} runs on `{}`",
                    ep.config_name(),
                    self.library.display(),
                    available.join(", "),
                    path.display(),
                    first.config_name()
                );
            }
            tracing::info!(target: "coxswain", "{} runs on `{}` ({})", path.display(), first.config_name(), first.ort_name());
        }
        Ok(chosen)
    }

    /// Creates a session builder with the deployment's settings applied, and says which execution providers
    /// it registered (best first; see [`OrtRuntime::execution_providers`]).
    pub(crate) fn session_builder(
        &self,
        config: &SessionConfig,
        path: &Path,
    ) -> Result<(SessionBuilder, Vec<ExecutionProvider>)> {
        let providers = self.execution_providers(config, path)?;
        let onnx = |e: ort::Error<SessionBuilder>| Error::onnx(path, e);
        let mut b = ort::session::Session::builder(&self.env)
            .map_err(|e| Error::onnx(path, e))?
            .with_intra_threads(config.intra_op_threads)
            .map_err(onnx)?
            .with_inter_threads(1)
            .map_err(onnx)?
            .with_intra_op_spinning(false)
            .map_err(onnx)?
            .with_inter_op_spinning(false)
            .map_err(onnx)?
            .with_optimization_level(config.optimization_level.to_ort())
            .map_err(onnx)?;
        // CPU is always registered by ONNX Runtime itself, after the others, for the operators they do not take.
        let dispatch: Vec<_> =
            providers.iter().filter(|ep| **ep != ExecutionProvider::Cpu).map(ExecutionProvider::dispatch).collect();
        if !dispatch.is_empty() {
            b = b.with_execution_providers(dispatch).map_err(onnx)?;
        }
        Ok((b, providers))
    }
}

/// The execution providers to register for a session, from those `requested` in order of preference and the
/// ONNX Runtime names of those the library has (`available`, as [`OrtRuntime::available_providers`] gives
/// them): every requested provider the library has, in the requested order, up to the first CPU (which takes
/// any operator, so nothing after it would run). The first is the one that runs the graph; ONNX Runtime gives
/// an operator it cannot take to the next one, and CPU takes what none of them does.
///
/// A list of which the library has none is an error naming every provider asked for, what the library has
/// and `library`.
pub fn choose_providers(
    requested: &[ExecutionProvider],
    available: &[String],
    library: &Path,
) -> Result<Vec<ExecutionProvider>> {
    let mut chosen = Vec::new();
    for ep in requested {
        if !available.iter().any(|a| a == ep.ort_name()) || chosen.contains(ep) {
            continue;
        }
        chosen.push(*ep);
        if *ep == ExecutionProvider::Cpu {
            break;
        }
    }
    if chosen.is_empty() {
        let asked: Vec<String> = requested.iter().map(|ep| format!("`{}`", ep.config_name())).collect();
        let missing: Vec<&str> = requested.iter().map(|ep| ep.ort_name()).collect();
        return Err(Error::OrtLibrary(format!(
            "none of the execution providers asked for ({}) is in {} (it has: {}); install an ONNX Runtime build \
             with {} (e.g. the onnxruntime-gpu wheel) and point --ort-lib or ORT_DYLIB_PATH at it, or add `cpu` to \
             the list as the fallback",
            asked.join(", "),
            library.display(),
            if available.is_empty() { "none".to_string() } else { available.join(", ") },
            missing.join(" or ")
        )));
    }
    Ok(chosen)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Finds a file in `dir` that is an ONNX Runtime library: `libonnxruntime.so` or a versioned
/// `libonnxruntime.so.1.x.y` (the wheel ships only the versioned name). The newest version wins.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == LIB_STEM || n.starts_with(&format!("{LIB_STEM}.")))
        })
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

fn find_library(explicit: Option<&Path>) -> Result<(PathBuf, LibrarySource)> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok((p.to_path_buf(), LibrarySource::Explicit))
        } else {
            Err(Error::OrtLibrary(format!("--ort-lib / config points at {}, which is not a file", p.display())))
        };
    }
    if let Some(v) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if p.is_file() {
            Ok((p, LibrarySource::EnvVar))
        } else {
            Err(Error::OrtLibrary(format!(
                "ORT_DYLIB_PATH is set to {}, which is not a file; fix or unset it (scripts/install-onnxruntime.sh \
                 installs the library into .ort/lib/ of the repo)",
                p.display()
            )))
        };
    }
    let mut looked = Vec::new();
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(".ort").join("lib");
            if let Some(lib) = library_in(&candidate) {
                return Ok((lib, LibrarySource::ProjectInstall));
            }
        }
    }
    looked.push(".ort/lib/ above the executable and the working directory".to_string());
    let mut system: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
    ] {
        system.push(PathBuf::from(d));
    }
    for dir in &system {
        if let Some(lib) = library_in(dir) {
            return Ok((lib, LibrarySource::System));
        }
        looked.push(dir.display().to_string());
    }
    Err(Error::OrtLibrary(format!(
        "no {LIB_STEM}* found; looked in: --ort-lib (not given), ORT_DYLIB_PATH (not set), {}. \
         Run scripts/install-onnxruntime.sh (it fetches the onnxruntime wheel from PyPI into .ort/lib/), \
         or set ORT_DYLIB_PATH / --ort-lib to your ONNX Runtime library",
        looked.join(", ")
    )))
}

/// Graph optimization level, as ONNX Runtime names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl OptimizationLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        }
    }
}

impl std::str::FromStr for OptimizationLevel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "disable" => Ok(Self::Disable),
            "basic" => Ok(Self::Basic),
            "extended" => Ok(Self::Extended),
            "all" => Ok(Self::All),
            other => Err(format!("unknown optimization level `{other}` (disable, basic, extended, all)")),
        }
    }
}

/// An execution provider a deployment may ask for. CPU is always there and always last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda { device_id: i32 },
    TensorRt { device_id: i32 },
}

impl ExecutionProvider {
    const ALL: [ExecutionProvider; 3] = [
        ExecutionProvider::Cpu,
        ExecutionProvider::Cuda { device_id: 0 },
        ExecutionProvider::TensorRt { device_id: 0 },
    ];

    /// ONNX Runtime's own name for the provider.
    pub fn ort_name(&self) -> &'static str {
        use ort::ep::ExecutionProvider as _;
        match self {
            ExecutionProvider::Cpu => ort::ep::CPU::NAME,
            ExecutionProvider::Cuda { .. } => ort::ep::CUDA::NAME,
            ExecutionProvider::TensorRt { .. } => ort::ep::TensorRT::NAME,
        }
    }

    /// The name used in configs and on the command line.
    pub fn config_name(&self) -> String {
        match self {
            ExecutionProvider::Cpu => "cpu".into(),
            ExecutionProvider::Cuda { device_id } => format!("cuda:{device_id}"),
            ExecutionProvider::TensorRt { device_id } => format!("tensorrt:{device_id}"),
        }
    }

    fn is_compiled_in(&self) -> bool {
        use ort::ep::ExecutionProvider as _;
        let r = match self {
            ExecutionProvider::Cpu => ort::ep::CPU::is_available(),
            ExecutionProvider::Cuda { .. } => ort::ep::CUDA::is_available(),
            ExecutionProvider::TensorRt { .. } => ort::ep::TensorRT::is_available(),
        };
        r.unwrap_or(false)
    }

    fn dispatch(&self) -> ort::ep::ExecutionProviderDispatch {
        match *self {
            ExecutionProvider::Cpu => ort::ep::CPU::default().build().error_on_failure(),
            ExecutionProvider::Cuda { device_id } => {
                ort::ep::CUDA::default().with_device_id(device_id).build().error_on_failure()
            }
            ExecutionProvider::TensorRt { device_id } => {
                ort::ep::TensorRT::default().with_device_id(device_id).build().error_on_failure()
            }
        }
    }
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, dev) = match s.split_once(':') {
            Some((n, d)) => (
                n,
                d.parse::<i32>().map_err(|_| format!("execution provider `{s}`: device id `{d}` is not an integer"))?,
            ),
            None => (s, 0),
        };
        match name {
            "cpu" => Ok(ExecutionProvider::Cpu),
            "cuda" => Ok(ExecutionProvider::Cuda { device_id: dev }),
            "tensorrt" => Ok(ExecutionProvider::TensorRt { device_id: dev }),
            other => Err(format!("unknown execution provider `{other}` (cpu, cuda[:id], tensorrt[:id])")),
        }
    }
}

/// The name of the table [`OnnxConfig::load`] reads, in a deployment config or a robot description.
pub const TABLE: &str = "onnx";

/// The `[onnx]` table of a deployment config file, as written:
///
/// ```toml
/// [onnx]
/// library = "/opt/onnxruntime/lib/libonnxruntime.so.1.31.1"   # optional; else ORT_DYLIB_PATH, .ort/lib, system
/// intra_op_threads = 1                                         # default 1
/// optimization_level = "all"                                   # disable | basic | extended | all
/// execution_providers = ["cuda:0", "cpu"]                      # in order of preference; default ["cpu"]
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnnxConfig {
    pub library: Option<PathBuf>,
    pub intra_op_threads: Option<usize>,
    pub optimization_level: Option<String>,
    pub execution_providers: Option<Vec<String>>,
}

/// A validated `[onnx]` table: where the library is (if the file says) and the session settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxConfig {
    pub library: Option<PathBuf>,
    pub session: SessionConfig,
}

impl OnnxConfig {
    /// Reads the `[onnx]` table of `path` (other tables of the file are left to their own readers). A file
    /// without the table gives the defaults.
    pub fn load(path: &Path) -> Result<OnnxConfig> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
        let doc: toml::Table =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let raw: RawOnnxConfig = match doc.get(TABLE) {
            None => RawOnnxConfig::default(),
            Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| Error::Parse {
                path: path.to_path_buf(),
                message: format!("[onnx]: {e}"),
            })?,
        };
        OnnxConfig::from_raw(raw, path)
    }

    pub fn from_raw(raw: RawOnnxConfig, path: &Path) -> Result<OnnxConfig> {
        let mut session = SessionConfig::default();
        if let Some(n) = raw.intra_op_threads {
            if n == 0 {
                return Err(Error::field(path, "onnx.intra_op_threads", "must be at least 1"));
            }
            session.intra_op_threads = n;
        }
        if let Some(level) = &raw.optimization_level {
            session.optimization_level =
                level.parse().map_err(|m: String| Error::field(path, "onnx.optimization_level", m))?;
        }
        if let Some(eps) = &raw.execution_providers {
            if eps.is_empty() {
                return Err(Error::field(path, "onnx.execution_providers", "is empty; use [\"cpu\"]"));
            }
            session.execution_providers = eps
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    e.parse().map_err(|m: String| Error::field(path, format!("onnx.execution_providers[{i}]"), m))
                })
                .collect::<Result<_>>()?;
        }
        let library =
            raw.library.map(|l| if l.is_relative() { path.parent().unwrap_or(Path::new(".")).join(l) } else { l });
        Ok(OnnxConfig { library, session })
    }
}

/// Per-deployment session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Threads ONNX Runtime may use inside one operator. 1 keeps inference on its own core.
    pub intra_op_threads: usize,
    pub optimization_level: OptimizationLevel,
    /// In order of preference: a session runs on the first one the loaded library has, and those after it
    /// that the library has take the operators it does not (CPU last of all). See [`choose_providers`].
    pub execution_providers: Vec<ExecutionProvider>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            intra_op_threads: 1,
            optimization_level: OptimizationLevel::All,
            execution_providers: vec![ExecutionProvider::Cpu],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OnnxConfig> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| Error::Usage(e.to_string()))?;
        let raw: RawOnnxConfig = doc
            .get("onnx")
            .cloned()
            .map(|v| v.try_into())
            .transpose()
            .map_err(|e: toml::de::Error| Error::Usage(e.to_string()))?
            .unwrap_or_default();
        OnnxConfig::from_raw(raw, Path::new("/etc/coxswain/robot.toml"))
    }

    #[test]
    fn onnx_table_sets_the_session_and_resolves_a_relative_library() {
        let c = parse(
            "[onnx]\nlibrary = \"lib/libonnxruntime.so\"\nintra_op_threads = 2\noptimization_level = \"basic\"\n\
             execution_providers = [\"cuda:1\", \"cpu\"]\n",
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.library, Some(PathBuf::from("/etc/coxswain/lib/libonnxruntime.so")));
        assert_eq!(c.session.intra_op_threads, 2);
        assert_eq!(c.session.optimization_level, OptimizationLevel::Basic);
        assert_eq!(
            c.session.execution_providers,
            vec![ExecutionProvider::Cuda { device_id: 1 }, ExecutionProvider::Cpu]
        );
    }

    #[test]
    fn defaults_are_one_thread_full_optimization_cpu() {
        let c = parse("[robot]\nid = \"x\"\n").map_err(|e| e.to_string());
        assert_eq!(c, Ok(OnnxConfig::default()));
        assert_eq!(SessionConfig::default().intra_op_threads, 1);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("[onnx]\nexecution_providers = [\"cpu\", \"gpu\"]", "onnx.execution_providers[1]"),
            ("[onnx]\nintra_op_threads = 0", "onnx.intra_op_threads"),
            ("[onnx]\noptimization_level = \"max\"", "onnx.optimization_level"),
        ] {
            match parse(text) {
                Err(Error::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{text}: expected a field error, got {other:?}"),
            }
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn providers_are_an_order_of_preference_over_what_the_library_has() {
        use ExecutionProvider::{Cpu, Cuda, TensorRt};
        let lib = Path::new("libonnxruntime.so");
        let cpu_only = names(&["CPUExecutionProvider"]);
        let gpu = names(&["CPUExecutionProvider", "CUDAExecutionProvider"]);
        let all = names(&["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]);
        let cuda = Cuda { device_id: 0 };
        let trt = TensorRt { device_id: 1 };
        for (requested, available, expected) in [
            (vec![cuda, Cpu], &cpu_only, vec![Cpu]),
            (vec![cuda, Cpu], &gpu, vec![cuda, Cpu]),
            (vec![trt, cuda, Cpu], &gpu, vec![cuda, Cpu]),
            (vec![trt, cuda, Cpu], &all, vec![trt, cuda, Cpu]),
            (vec![trt, Cpu], &cpu_only, vec![Cpu]),
            // CPU takes every operator, so nothing after it is registered.
            (vec![Cpu, cuda], &all, vec![Cpu]),
            (vec![cuda], &gpu, vec![cuda]),
        ] {
            match choose_providers(&requested, available, lib) {
                Ok(chosen) => assert_eq!(chosen, expected, "{requested:?} from {available:?}"),
                Err(e) => panic!("{requested:?} from {available:?}: {e}"),
            }
        }
    }

    #[test]
    fn a_list_the_library_has_none_of_names_every_provider_asked_for_and_what_it_has() {
        let requested = [ExecutionProvider::Cuda { device_id: 1 }, ExecutionProvider::TensorRt { device_id: 0 }];
        let available = names(&["CPUExecutionProvider"]);
        match choose_providers(&requested, &available, Path::new("/opt/ort/libonnxruntime.so")) {
            Err(Error::OrtLibrary(m)) => {
                for part in ["`cuda:1`", "`tensorrt:0`", "CPUExecutionProvider", "/opt/ort/libonnxruntime.so"] {
                    assert!(m.contains(part), "{part} is not in: {m}");
                }
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn an_explicit_library_that_is_missing_is_a_clear_error() {
        match find_library(Some(Path::new("/nonexistent/libonnxruntime.so"))) {
            Err(Error::OrtLibrary(m)) => assert!(m.contains("/nonexistent/libonnxruntime.so"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
