//! Recording end to end: a synthetic run (ticks, chunks, events, logs) written by `McapRecorder` into
//! rolled-over files, then read by the report (numbers and plots checked against what was written) and by
//! an independent reader, PyPI's `mcap` package (`tests/record/read_mcap.py`).
//!
//! The Python test needs `$COXSWAIN_PYTHON` with `mcap` importable (`pip install mcap==1.6.0`). Without it
//! the test says so and is skipped, unless COXSWAIN_REQUIRE_PYTHON=1, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use coxswain::record::{
    self, foxglove_log_channel, json_schema_for, ChannelSpec, FoxgloveLog, LogLevel, McapRecorder, RecordOptions,
    RecordingSummary,
};
use coxswain::report::{self, plot};
use serde::Serialize;
use serde_json::{json, Value};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coxswain-record-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Serialize, schemars::JsonSchema)]
struct Tick {
    tick: u64,
    t_s: f64,
    lateness_ns: u64,
    work_ns: u64,
    state: &'static str,
    enable: bool,
    measured_rad: Option<[f64; 3]>,
    command_rad: [f64; 3],
    proposed_rad: Option<[f64; 3]>,
    intervention: Option<&'static str>,
    input: Input,
    output: Value,
}

/// Typed, not a `serde_json::Value`: `json!` turns a NaN into `null` before the recorder ever sees it.
#[derive(Serialize, schemars::JsonSchema)]
struct Input {
    joint_seq: u64,
    gyro_rad_s: [f64; 3],
}

#[derive(Serialize, schemars::JsonSchema)]
struct Chunk {
    seq: u64,
    t0_s: f64,
    received_t_s: f64,
    accepted: bool,
    spliced: bool,
    rejection: Option<&'static str>,
    latency_s: f64,
    actions_rad: Vec<[f64; 3]>,
}

/// What the synthetic run wrote, counted while writing (the report's expected answers).
#[derive(Default)]
struct Written {
    ticks: u64,
    lateness_ns: Vec<u64>,
    last_t_s: f64,
    chunks: u64,
    accepted: u64,
    rejected: u64,
    spliced: u64,
    interventions: BTreeMap<String, u64>,
    transitions: Vec<(f64, &'static str, &'static str, &'static str)>,
    events: BTreeMap<String, u64>,
    nonfinite_inputs: u64,
    tick_sum: u64,
    last_command_rad: [f64; 3],
    dropped: u64,
    logs: u64,
}

const TICKS: u64 = 3_000;
const DT_S: f64 = 0.002;
const T0_NS: u64 = 1_700_000_000_000_000_000;

fn tick_at(i: u64, w: &mut Written) -> Tick {
    let t_s = i as f64 * DT_S;
    // Mostly tens of microseconds late, a spike every 500 ticks.
    let lateness_ns = if i % 500 == 250 { 900_000 } else { (i * 7919 % 1000) * 60 };
    let holding = (1500..1700).contains(&i);
    let intervention = if (1500..1520).contains(&i) {
        Some("position limit")
    } else if i.is_multiple_of(50) {
        Some("velocity limit")
    } else {
        None
    };
    let command_rad = [(t_s).sin() * 0.5, (t_s * 2.0).cos() * 0.25 - 0.1, 1.0 / 3.0 + t_s * 1e-3];
    let measured_rad = (i >= 10).then(|| command_rad.map(|q| q - 0.001));
    // Inputs may hold non-finite sensor values; outputs never do.
    let gyro = if i % 300 == 7 {
        f64::NAN
    } else if i == 999 {
        f64::INFINITY
    } else {
        0.01 * i as f64
    };
    if !gyro.is_finite() {
        w.nonfinite_inputs += 1;
    }
    w.ticks += 1;
    w.tick_sum += i;
    w.lateness_ns.push(lateness_ns);
    w.last_t_s = t_s;
    w.last_command_rad = command_rad;
    if let Some(r) = intervention {
        *w.interventions.entry(r.to_string()).or_default() += 1;
    }
    Tick {
        tick: i,
        t_s,
        lateness_ns,
        work_ns: 20_000 + i % 7 * 1000,
        state: if holding { "holding" } else { "running" },
        enable: true,
        measured_rad,
        command_rad,
        proposed_rad: Some(command_rad.map(|q| q + 0.002)),
        intervention,
        input: Input { joint_seq: i, gyro_rad_s: [gyro, 0.0, -0.5] },
        output: json!({"enable": true, "position_rad": command_rad}),
    }
}

fn channels() -> Vec<ChannelSpec> {
    vec![
        ChannelSpec::for_type::<Tick>("/coxswain/tick", "coxswain.Tick"),
        ChannelSpec::for_type::<Chunk>("/coxswain/chunk", "coxswain.Chunk"),
        ChannelSpec::new(
            "/coxswain/event",
            "coxswain.Event",
            r#"{"type":"object","properties":{"kind":{"type":"string"}}}"#,
        ),
        foxglove_log_channel(),
    ]
}

/// A 6 s run at 500 Hz, 3 joints, rolled over into several files.
fn write_synthetic_run(dir: &Path) -> (RecordingSummary, Written) {
    let opts = RecordOptions { max_file_bytes: 60_000, chunk_bytes: 32_000, ..RecordOptions::new(dir, "run") };
    let meta = vec![(
        "coxswain.session".to_string(),
        BTreeMap::from([("robot".to_string(), "arm".to_string()), ("policy".to_string(), "reach-dp".to_string())]),
    )];
    let mut rec = McapRecorder::create(&opts, &meta, &channels()).unwrap();
    let (tick_ch, chunk_ch) = (rec.channel("/coxswain/tick").unwrap(), rec.channel("/coxswain/chunk").unwrap());
    let (event_ch, log_ch) = (rec.channel("/coxswain/event").unwrap(), rec.channel("/coxswain/log").unwrap());
    let drops = rec.drop_counter();
    let mut w = Written::default();
    for i in 0..TICKS {
        let t_ns = T0_NS + i * 2_000_000;
        let t_s = i as f64 * DT_S;
        rec.write(tick_ch, t_ns, &tick_at(i, &mut w)).unwrap();
        if i % 50 == 25 {
            let seq = i / 50;
            let accepted = seq % 10 != 9;
            let spliced = accepted && seq % 3 == 0;
            w.chunks += 1;
            w.accepted += u64::from(accepted);
            w.rejected += u64::from(!accepted);
            w.spliced += u64::from(spliced);
            let chunk = Chunk {
                seq,
                t0_s: t_s - 0.03,
                received_t_s: t_s,
                accepted,
                spliced,
                rejection: (!accepted).then_some("non-finite action"),
                latency_s: 0.03 + seq as f64 * 1e-4,
                actions_rad: (0..16).map(|k| [k as f64 * 0.01, -0.1, 1.0 / 3.0]).collect(),
            };
            rec.write(chunk_ch, t_ns, &chunk).unwrap();
        }
        let mut event = |kind: &'static str, extra: Value| {
            *w.events.entry(kind.to_string()).or_default() += 1;
            let mut e = json!({"t_s": t_s, "kind": kind, "text": format!("{kind} at tick {i}")});
            e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            rec.write(event_ch, t_ns, &e).unwrap();
        };
        match i {
            1500 => {
                event("safety_transition", json!({"from": "running", "to": "holding", "reason": "stale state"}));
                w.transitions.push((t_s, "running", "holding", "stale state"));
            }
            1700 => {
                event("safety_transition", json!({"from": "holding", "to": "running", "reason": "state fresh"}));
                w.transitions.push((t_s, "holding", "running", "state fresh"));
            }
            400 | 2400 => event("chunk_timeout", json!({"waited_s": 0.2})),
            5 => event("armed", json!({})),
            _ => {}
        }
        if i % 1000 == 0 {
            rec.write(log_ch, t_ns, &FoxgloveLog::new(t_ns, LogLevel::Info, "coxswain.test", format!("tick {i}")))
                .unwrap();
            w.logs += 1;
        }
        if i % 600 == 599 {
            drops.record_drop(tick_ch);
            w.dropped += 1;
        }
    }
    let summary = rec.finish().unwrap();
    (summary, w)
}

fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn svg_elements<'a>(doc: &'a roxmltree::Document<'a>, tag: &str, attr: &str, value: &str) -> usize {
    doc.descendants().filter(|n| n.has_tag_name(tag) && n.attribute(attr) == Some(value)).count()
}

#[test]
fn report_of_a_synthetic_run_matches_what_was_written_and_draws_every_series_and_marker() {
    let dir = temp_dir("report");
    let (summary, w) = write_synthetic_run(&dir.join("rec"));
    assert!(summary.files.len() >= 3, "rolled over: {:?}", summary.files);
    let out = dir.join("report");
    let r = report::build(&summary.files, &out).unwrap();

    assert_eq!(r.ticks, w.ticks);
    assert!((r.duration_s - w.last_t_s).abs() < 1e-12, "{}", r.duration_s);
    let mut sorted = w.lateness_ns.clone();
    sorted.sort_unstable();
    let lateness = r.lateness.unwrap();
    assert_eq!(lateness.p50_ns, nearest_rank(&sorted, 0.5));
    assert_eq!(lateness.p99_ns, nearest_rank(&sorted, 0.99));
    assert_eq!(lateness.max_ns, 900_000);
    assert_eq!(
        (r.chunks_received, r.chunks_accepted, r.chunks_rejected, r.chunks_spliced),
        (w.chunks, w.accepted, w.rejected, w.spliced)
    );
    assert_eq!(r.rejections_by_reason, BTreeMap::from([("non-finite action".to_string(), w.rejected)]));
    assert_eq!(r.interventions_by_reason, w.interventions);
    assert_eq!(r.interventions_by_reason.len(), 2);
    let transitions: Vec<_> =
        r.transitions.iter().map(|t| (t.t_s, t.from.as_str(), t.to.as_str(), t.reason.as_str())).collect();
    assert_eq!(transitions, w.transitions);
    assert_eq!(r.events_by_kind, w.events);
    assert_eq!(r.messages_dropped, w.dropped);
    assert_eq!(r.dropped_by_topic, BTreeMap::from([("/coxswain/tick".to_string(), w.dropped)]));
    assert_eq!(r.ticks_by_state["holding"], 200);

    let text = r.to_string();
    for needle in [
        "3000 ticks".to_string(),
        format!("p50 {:.1} us", lateness.p50_ns as f64 / 1e3),
        "max 900.0 us".to_string(),
        format!(
            "{} received, {} accepted ({} spliced by RTC), {} rejected",
            w.chunks, w.accepted, w.spliced, w.rejected
        ),
        "running -> holding  (stale state)".to_string(),
        format!("messages dropped: {}", w.dropped),
    ] {
        assert!(text.contains(&needle), "`{needle}` not in:\n{text}");
    }

    // The plots: parse each as XML and count the marks of each colour.
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let joints_svg = read("joints.svg");
    let joints = roxmltree::Document::parse(&joints_svg).unwrap();
    assert_eq!(r.plot_counts.joint_panels, 3);
    assert_eq!(svg_elements(&joints, "polyline", "stroke", plot::COMMAND_COLOR), 3);
    assert_eq!(svg_elements(&joints, "polyline", "stroke", plot::MEASURED_COLOR), 3);
    assert_eq!(svg_elements(&joints, "polyline", "stroke", plot::SPLICE_COLOR), 3 * w.spliced as usize);
    assert_eq!(r.plot_counts.splice_markers, w.spliced as usize);

    let lateness_svg = read("lateness.svg");
    let lateness_doc = roxmltree::Document::parse(&lateness_svg).unwrap();
    // Expected bins, from the documented rule: LATENESS_BINS equal bins from 0 to the largest lateness.
    let width_ns = 900_000.0 / plot::LATENESS_BINS as f64;
    let mut bins = vec![0u64; plot::LATENESS_BINS];
    for &ns in &w.lateness_ns {
        bins[((ns as f64 / width_ns) as usize).min(plot::LATENESS_BINS - 1)] += 1;
    }
    let non_empty = bins.iter().filter(|&&n| n > 0).count();
    assert_eq!(svg_elements(&lateness_doc, "rect", "fill", plot::LATENCY_BAR_COLOR), non_empty);
    assert_eq!(r.plot_counts.lateness_bars, non_empty);

    let interventions_svg = read("interventions.svg");
    let interventions = roxmltree::Document::parse(&interventions_svg).unwrap();
    assert_eq!(svg_elements(&interventions, "rect", "fill", plot::INTERVENTION_BAR_COLOR), 2);
    let texts: Vec<String> = interventions
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for (reason, n) in &w.interventions {
        assert!(texts.iter().any(|t| t == &format!("{reason}: {n}")), "{reason}: {n} not among {texts:?}");
    }
    assert_eq!(r.plots.len(), 3);
}

#[test]
fn report_names_the_file_topic_and_field_of_a_malformed_tick() {
    let dir = temp_dir("malformed");
    let mut rec = McapRecorder::create(&RecordOptions::new(&dir, "bad"), &[], &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    rec.write(tick_ch, 5, &json!({"tick": 0, "t_s": 0.0, "lateness_ns": "late"})).unwrap();
    let summary = rec.finish().unwrap();
    let err = report::build(&summary.files, &dir.join("out")).unwrap_err().to_string();
    assert!(err.contains("bad-00000.mcap") && err.contains("/coxswain/tick") && err.contains("lateness_ns"), "{err}");
}

/// Ticks like the runtime's at 500 Hz for 3 joints, zstd-compressed: prints the bytes per second and checks
/// it stays under 64 KiB/s (about 5.3 GiB a day), so a change that bloats the records is noticed.
#[test]
fn json_ticks_at_500_hz_for_3_joints_compress_below_64_kib_per_second() {
    let dir = temp_dir("rate");
    let mut rec = McapRecorder::create(&RecordOptions::new(&dir, "rate"), &[], &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    let mut w = Written::default();
    let seconds = 20;
    let mut raw_bytes = 0;
    for i in 0..(500 * seconds) {
        let tick = tick_at(i, &mut w);
        raw_bytes += record::json::to_vec(&tick).unwrap().len();
        rec.write(tick_ch, T0_NS + i * 2_000_000, &tick).unwrap();
    }
    let summary = rec.finish().unwrap();
    let per_s = summary.bytes as f64 / seconds as f64;
    eprintln!(
        "500 Hz JSON ticks, 3 joints: {:.0} B/tick raw, {:.0} B/s raw, {:.0} B/s in MCAP with zstd ({:.1}x)",
        raw_bytes as f64 / (500 * seconds) as f64,
        raw_bytes as f64 / seconds as f64,
        per_s,
        raw_bytes as f64 / summary.bytes as f64
    );
    assert!(per_s < 64.0 * 1024.0, "{per_s} B/s");
}

fn python() -> Option<PathBuf> {
    let py = PathBuf::from(std::env::var_os("COXSWAIN_PYTHON")?);
    let ok = Command::new(&py).args(["-c", "import mcap.reader"]).output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some(py)
}

#[test]
fn pypi_mcap_reads_every_rolled_over_file_with_the_same_counts_and_values() {
    let Some(py) = python() else {
        let msg = "no $COXSWAIN_PYTHON with the mcap package (pip install mcap==1.6.0)";
        assert!(std::env::var("COXSWAIN_REQUIRE_PYTHON").as_deref() != Ok("1"), "{msg}");
        eprintln!("SKIPPED PyPI mcap reader test: {msg}");
        return;
    };
    let dir = temp_dir("python");
    let (summary, w) = write_synthetic_run(&dir);
    assert!(summary.files.len() >= 3);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/record/read_mcap.py");
    let out = Command::new(&py).arg(&script).args(&summary.files).output().unwrap();
    assert!(out.status.success(), "read_mcap.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(seen["files"], summary.files.len());
    let topics = &seen["topics"];
    for (topic, n) in &summary.messages_per_topic {
        assert_eq!(topics[topic]["count"].as_u64().unwrap_or(0), *n, "{topic}");
    }
    assert_eq!(topics["/coxswain/tick"]["count"], w.ticks);
    assert_eq!(topics["/coxswain/chunk"]["count"], w.chunks);
    assert_eq!(topics["/coxswain/log"]["count"], w.logs);
    assert_eq!(topics["/coxswain/log"]["schema_name"], "foxglove.Log");
    assert_eq!(topics["/coxswain/tick"]["schema_name"], "coxswain.Tick");
    assert_eq!(topics["/coxswain/tick"]["first_log_time_ns"], T0_NS);
    assert_eq!(topics["/coxswain/tick"]["last_log_time_ns"], T0_NS + (TICKS - 1) * 2_000_000);
    assert_eq!(seen["tick_sum"], w.tick_sum);
    assert_eq!(seen["nonfinite_strings"], w.nonfinite_inputs);
    // Python parses floats exactly (correctly rounded) and prints them with repr: the same bits come back.
    let last = &topics["/coxswain/tick"]["last"];
    for (j, want) in w.last_command_rad.iter().enumerate() {
        assert_eq!(last["command_rad"][j].as_f64().unwrap().to_bits(), want.to_bits(), "joint {j}");
    }
    assert_eq!(last["t_s"].as_f64().unwrap().to_bits(), w.last_t_s.to_bits());
    // Every file carries the session metadata and the recorder's record.
    let meta = &seen["metadata"];
    assert_eq!(meta["coxswain.session"].as_array().unwrap().len(), summary.files.len());
    let recorder = meta[record::RECORDER_METADATA].as_array().unwrap();
    assert_eq!(recorder.len(), summary.files.len());
    assert_eq!(recorder.last().unwrap()["messages_dropped"], w.dropped.to_string());
    let in_files: u64 = recorder.iter().map(|m| m["messages_in_file"].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(in_files, summary.messages());
    // The derived schema Python saw is the one json_schema_for produced.
    assert!(json_schema_for::<Tick>().contains("lateness_ns"));
}
