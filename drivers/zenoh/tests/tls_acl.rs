//! The TLS + access-control router config that ships (`firmware-configs/zenoh/tls-acl-router.json5`), run
//! as it is with certificates made here: a router in process, and one client session per role, each with its
//! own certificate. What it must hold: only the runtime's certificate may command the joints, only an
//! operator's may arm or ask for a model swap or a parameter change, anyone authenticated may still send
//! the e-stop and ask for the state, and a certificate from another CA gets no session at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coxswain_zenoh::zenoh::{self, Config, Session, Wait};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A CA, and certificates it signs, written as PEM files into `dir`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca { issuer: Issuer::new(params, key), dir: dir.to_path_buf() }
    }

    /// `(certificate, key)` paths of a certificate for `common_name`, valid for localhost.
    fn sign(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) =
            (self.dir.join(format!("{common_name}-cert.pem")), self.dir.join(format!("{common_name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn insert(c: &mut Config, key: &str, value: &str) {
    c.insert_json5(key, value).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
}

/// The shipped router config with its certificate paths in `dir` and its listener on `port`.
fn router(dir: &Path, port: u16) -> Session {
    let text = std::fs::read_to_string(repo().join("firmware-configs/zenoh/tls-acl-router.json5"))
        .unwrap()
        .replace("/etc/coxswain/tls/", &format!("{}/", dir.display()))
        .replace("tls/0.0.0.0:7448", &format!("tls/127.0.0.1:{port}"));
    let path = dir.join("router.json5");
    std::fs::write(&path, text).unwrap();
    zenoh::open(Config::from_file(&path).unwrap()).wait().unwrap()
}

/// A client of the router that presents `cert` and trusts `ca`.
fn client(ca: &Path, (cert, key): &(PathBuf, PathBuf), port: u16) -> zenoh::Result<Session> {
    let mut c = Config::default();
    insert(&mut c, "mode", "\"client\"");
    insert(&mut c, "scouting/multicast/enabled", "false");
    insert(&mut c, "connect/endpoints", &format!("[\"tls/localhost:{port}\"]"));
    insert(&mut c, "connect/timeout_ms", "3000");
    insert(&mut c, "connect/exit_on_failure", "true");
    for (k, v) in [
        ("transport/link/tls/root_ca_certificate", ca),
        ("transport/link/tls/connect_certificate", cert),
        ("transport/link/tls/connect_private_key", key),
    ] {
        insert(&mut c, k, &format!("{:?}", v.display().to_string()));
    }
    insert(&mut c, "transport/link/tls/enable_mtls", "true");
    zenoh::open(c).wait()
}

/// Payloads received on `key` by `session`.
fn collect(session: &Session, key: &str) -> (zenoh::pubsub::Subscriber<()>, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let sub = session
        .declare_subscriber(key)
        .callback(move |s| sink.lock().unwrap().push(String::from_utf8_lossy(&s.payload().to_bytes()).into_owned()))
        .wait()
        .unwrap();
    (sub, got)
}

/// `from` puts `payload` on `key` every 20 ms until `until` holds or 5 s pass.
fn put_until(from: &Session, key: &str, payload: &str, until: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        from.put(key, payload).wait().unwrap();
        if until() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The replies `from` gets to a query on `key` (1 s timeout).
fn ask(from: &Session, key: &str) -> Vec<String> {
    let replies = from.get(key).payload("{}").timeout(Duration::from_secs(1)).wait().unwrap();
    let mut out = Vec::new();
    while let Ok(r) = replies.recv() {
        if let Ok(s) = r.result() {
            out.push(String::from_utf8_lossy(&s.payload().to_bytes()).into_owned());
        }
    }
    out
}

#[test]
fn only_the_runtimes_certificate_commands_joints_and_only_an_operators_arms_or_swaps_models_over_tls() {
    let dir = std::env::temp_dir().join(format!("coxswain-tls-acl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new(&dir, "fleet-ca");
    let ca_pem = dir.join("fleet-ca.pem");
    let router_cert = ca.sign("router");
    std::fs::rename(&router_cert.0, dir.join("router-cert.pem")).unwrap();
    std::fs::rename(&router_cert.1, dir.join("router-key.pem")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _router = router(&dir, port);

    let runtime = client(&ca_pem, &ca.sign("coxswain-runtime"), port).unwrap();
    let operator = client(&ca_pem, &ca.sign("coxswain-operator"), port).unwrap();
    let driver = client(&ca_pem, &ca.sign("arm-driver"), port).unwrap();
    // Authenticated (the fleet CA signed it) but with no role.
    let intruder = client(&ca_pem, &ca.sign("laptop"), port).unwrap();

    // Joint commands: the runtime's reach the driver; nobody else's ever do.
    let (_s, at_driver) = collect(&driver, "robot/arm/cmd/joints");
    let delivered = |what: &'static str| {
        let got = at_driver.clone();
        move || got.lock().unwrap().iter().any(|p| p == what)
    };
    for _ in 0..10 {
        intruder.put("robot/arm/cmd/joints", "from the laptop").wait().unwrap();
    }
    assert!(put_until(&runtime, "robot/arm/cmd/joints", "from the runtime", delivered("from the runtime")));
    for _ in 0..10 {
        intruder.put("robot/arm/cmd/joints", "from the laptop").wait().unwrap();
        operator.put("robot/arm/cmd/joints", "from the operator").wait().unwrap();
    }
    // The runtime's later command marks that everything sent before it had its chance to arrive.
    assert!(put_until(&runtime, "robot/arm/cmd/joints", "runtime again", delivered("runtime again")));
    let got = at_driver.lock().unwrap().clone();
    assert!(got.iter().all(|p| p.starts_with("from the runtime") || p == "runtime again"), "{got:?}");

    // Arming: an operator's request reaches the runtime, the laptop's does not; the e-stop is open to all.
    let (_s, arms) = collect(&runtime, "robot/arm/runtime/arm");
    let (_s, estops) = collect(&runtime, "robot/arm/safety/estop");
    for _ in 0..10 {
        intruder.put("robot/arm/runtime/arm", "arm from the laptop").wait().unwrap();
    }
    let arrived = |got: &Arc<Mutex<Vec<String>>>, what: &'static str| {
        let got = got.clone();
        move || got.lock().unwrap().iter().any(|p| p == what)
    };
    assert!(put_until(
        &operator,
        "robot/arm/runtime/arm",
        "arm from the operator",
        arrived(&arms, "arm from the operator")
    ));
    assert!(put_until(
        &intruder,
        "robot/arm/safety/estop",
        "stop from the laptop",
        arrived(&estops, "stop from the laptop")
    ));
    assert!(arms.lock().unwrap().iter().all(|p| p == "arm from the operator"), "{:?}", arms.lock().unwrap());

    // Queries: the runtime's queryable answers state to anyone, model swaps and parameters only to operators;
    // the laptop's swap request never even reaches it.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = asked.clone();
    let _q = runtime
        .declare_queryable("robot/arm/runtime/**")
        .callback(move |q| {
            seen.lock().unwrap().push(q.key_expr().as_str().to_string());
            let _ = q.reply(q.key_expr().clone(), "answer").wait();
        })
        .wait()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while ask(&operator, "robot/arm/runtime/state").is_empty() && Instant::now() < end {}
    assert_eq!(ask(&intruder, "robot/arm/runtime/state"), vec!["answer"]);
    assert_eq!(ask(&operator, "robot/arm/runtime/model/swap"), vec!["answer"]);
    assert_eq!(ask(&operator, "robot/arm/runtime/params"), vec!["answer"]);
    let before = asked.lock().unwrap().len();
    assert!(ask(&intruder, "robot/arm/runtime/model/swap").is_empty());
    assert!(ask(&intruder, "robot/arm/runtime/params").is_empty());
    assert_eq!(asked.lock().unwrap().len(), before, "{:?}", asked.lock().unwrap());

    // A laptop cannot pose as the runtime by answering its queries.
    drop(_q);
    let _fake = intruder
        .declare_queryable("robot/arm/runtime/**")
        .callback(|q| {
            let _ = q.reply(q.key_expr().clone(), "forged").wait();
        })
        .wait()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ask(&operator, "robot/arm/runtime/state").is_empty());

    // The client example that ships is a config this build reads.
    Config::from_file(repo().join("firmware-configs/zenoh/tls-client.json5")).unwrap();

    // A certificate of another CA gets no session.
    let other = Ca::new(&dir, "other-ca");
    assert!(client(&ca_pem, &other.sign("coxswain-runtime"), port).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
