//! Recording and deterministic replay in simulated time: a lockstep run with faults (an e-stop engaged and
//! reset in one tick, non-finite sensor values, a latched stop) recorded through `RunRecorder`, read back,
//! and replayed bit for bit; a tampered recording and other execution options are caught; a recording that
//! dropped ticks is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use coxswain::control::executor::{Interpolation, Overlap};
use coxswain::control::inference::InferenceWorker;
use coxswain::control::io::{ControlInput, EStopIn, Request};
use coxswain::control::lockstep::{Latency, Lockstep, Plant, Seen};
use coxswain::control::runner::TimedEvent;
use coxswain::control::{Controller, ExecutionOptions, RtcMode};
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::record::{self, ChunkRecord, McapRecorder, RecordOptions, RunRecorder, CHUNK_TOPIC, TICK_TOPIC};
use coxswain::replay::{replay, run_metadata, RecordedRun, RunInfo};
use coxswain::safety::SafetyState;
use coxswain_cli::plant::ArmPlant;
use coxswain_config::Robot;
use coxswain_tests::{model, ort, repo};

fn robot_path() -> PathBuf {
    repo().join("firmware-configs/sim-arm.toml")
}

fn info(seed: u64) -> RunInfo {
    RunInfo {
        version: "test".into(),
        clock: "sim".into(),
        seed,
        latency: Some(Latency::Ticks(3)),
        execution: ExecutionOptions {
            execute_actions: 8,
            interpolation: Interpolation::Cubic,
            overlap: Overlap::Latest,
            rtc: RtcMode::Inpaint,
        },
        candidates: 1,
        intra_op_threads: 1,
        optimization_level: "all".into(),
        execution_providers: vec!["cpu".into()],
        control_hz: 500.0,
    }
}

fn policy(seed: u64) -> Policy {
    Policy::load(ort(), &model("reach-dp"), &PolicyOptions { seed, ..PolicyOptions::default() }).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coxswain-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The simulated arm with faults switched on at given ticks.
struct Faulty {
    arm: ArmPlant,
    tick: u64,
}

impl Plant for Faulty {
    fn measure(&mut self, input: &mut ControlInput) {
        self.arm.measure(input);
        self.tick += 1;
        // A sensor glitch the controller must survive and the recording must keep as it was.
        if self.tick.is_multiple_of(97) {
            input.state.effort_nm[0] = f64::NAN;
        }
        // An engage and a reset inside one control period.
        if self.tick == 1500 {
            input.estop.push(EStopIn::Engage).unwrap();
            input.estop.push(EStopIn::Reset { stale: false }).unwrap();
        }
        // Non-finite joint positions: a latched stop.
        if self.tick >= 2600 {
            input.state.position_rad[1] = f64::INFINITY;
        }
    }

    fn advance(&mut self, command_rad: Option<&[f64]>, dt_s: f64) {
        self.arm.advance(command_rad, dt_s);
    }
}

/// Records a seeded lockstep run with faults into `dir`; returns the files and the states the run went
/// through.
fn record_faulty_run(dir: &Path, seed: u64) -> (Vec<PathBuf>, Vec<SafetyState>) {
    let robot = Robot::load(&robot_path()).unwrap();
    let info = info(seed);
    let policy = policy(seed);
    let metadata = run_metadata(&info, &robot_path(), &policy).unwrap();
    let (controller, frame) = Controller::for_robot(&policy, &robot, info.execution).unwrap();
    let target = controller.vector_fields().iter().position(|n| n == "target");
    let worker = InferenceWorker::new(policy, info.execution.rtc, seed).unwrap();
    let mut ls = Lockstep::new(controller, worker, frame, robot.control_hz, Latency::Ticks(3)).unwrap();
    let opts = RecordOptions { max_file_bytes: 400_000, ..RecordOptions::new(dir, "faulty") };
    let rec = Rc::new(RefCell::new(Some(RunRecorder::create(&opts, &metadata, 0).unwrap())));
    let r = rec.clone();
    ls.observe(Box::new(move |seen| {
        let mut guard = r.borrow_mut();
        let rec = guard.as_mut().unwrap();
        match seen {
            Seen::Tick { input, output } => {
                rec.tick(input, output, 0, 0).unwrap();
                for e in &output.events {
                    rec.control_event(&TimedEvent { tick: input.tick, t_s: input.t_s, event: *e }).unwrap();
                }
            }
            Seen::Chunk { worker, chunk, deliver_tick } => {
                let mut c = ChunkRecord::of(worker, chunk, false);
                c.deliver_tick = Some(deliver_tick);
                rec.chunk(c).unwrap();
            }
            Seen::Worker(e) => rec.worker_event(e).unwrap(),
        }
    }));
    let mut arm = ArmPlant::new(&robot, seed, target, None).unwrap();
    arm.draw_episode();
    let mut plant = Faulty { arm, tick: 0 };
    let mut states = Vec::new();
    let mut requests = vec![Request::Arm, Request::Start];
    for k in 0..3000u64 {
        if k == 1800 {
            // After the e-stop's stop completed and its reset applied: arm and start again.
            requests = vec![Request::Arm, Request::Start];
        }
        let out = ls.step(&mut plant, &std::mem::take(&mut requests));
        if states.last() != Some(&out.state) {
            states.push(out.state);
        }
    }
    let summary = rec.borrow_mut().take().unwrap().finish().unwrap();
    (summary.files, states)
}

#[test]
fn a_recorded_lockstep_run_with_faults_replays_bit_for_bit() {
    let dir = temp_dir("faulty");
    let (files, states) = record_faulty_run(&dir, 5);
    assert!(files.len() >= 2, "the recording rolled over: {files:?}");
    // The run went through what the faults should cause, so the replay covers them.
    assert!(states.contains(&SafetyState::Running) && states.contains(&SafetyState::Fault), "{states:?}");
    let recording = record::read_files(&files).unwrap();
    let tick_with_nan = recording.topic(TICK_TOPIC).any(|m| String::from_utf8_lossy(&m.data).contains("\"NaN\""));
    assert!(tick_with_nan, "non-finite inputs are recorded as they were");

    let run = RecordedRun::of(&recording).unwrap();
    assert_eq!(run.info, info(5));
    run.verify_files(&robot_path(), &model("reach-dp")).unwrap();
    let robot = Robot::load(&robot_path()).unwrap();
    let r = replay(&recording, &robot, policy(5), &run.info, true).unwrap();
    assert_eq!(r.ticks, 3000);
    assert_eq!(r.ticks_identical, 3000, "{r}");
    assert!(r.chunks_taken >= 5, "{r}");
    assert!(r.chunks_compared >= r.chunks_taken && r.chunks_identical == r.chunks_compared, "{r}");
    // The one request without a chunk is the observation the policy refused (infinite joint positions).
    let refused = recording
        .topic(coxswain::record::EVENT_TOPIC)
        .filter(|m| String::from_utf8_lossy(&m.data).contains("\"kind\":\"observe_failed\""))
        .count() as u64;
    assert_eq!(r.chunks_not_recorded, refused, "{r}");
    assert!(r.identical());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_with_other_execution_options_names_the_first_differing_tick() {
    let dir = temp_dir("options");
    let (files, _) = record_faulty_run(&dir, 6);
    let recording = record::read_files(&files).unwrap();
    let robot = Robot::load(&robot_path()).unwrap();
    let mut other = info(6);
    other.execution.interpolation = Interpolation::Linear;
    let r = replay(&recording, &robot, policy(6), &other, false).unwrap();
    assert!(!r.identical());
    let m = r.first_tick_mismatch.expect("a mismatch is reported");
    assert!(r.ticks_identical < r.ticks);
    assert!(m.field.starts_with('/') && m.recorded != m.replayed, "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrites `files` into `dir` with one chunk's initial noise changed.
fn tamper_noise(files: &[PathBuf], dir: &Path, seq: u64) -> PathBuf {
    let recording = record::read_files(files).unwrap();
    let mut rec =
        McapRecorder::create(&RecordOptions::new(dir, "tampered"), &recording.metadata, &record::run_channels())
            .unwrap();
    for m in &recording.messages {
        let ch = rec.channel(&m.topic).unwrap();
        if &*m.topic == CHUNK_TOPIC {
            let mut c: ChunkRecord = serde_json::from_slice(&m.data).unwrap();
            if c.seq == seq {
                c.initial_noise[0] += 0.5;
            }
            rec.write(ch, m.log_time_ns, &c).unwrap();
        } else {
            let v: Box<serde_json::value::RawValue> = serde_json::from_slice(&m.data).unwrap();
            rec.write(ch, m.log_time_ns, &v).unwrap();
        }
    }
    rec.finish().unwrap().files[0].clone()
}

#[test]
fn a_chunk_whose_recorded_noise_was_changed_is_the_one_the_policy_replay_flags() {
    let dir = temp_dir("tamper");
    let (files, _) = record_faulty_run(&dir.join("run"), 7);
    let recording = record::read_files(&files).unwrap();
    let seq = recording
        .topic(CHUNK_TOPIC)
        .map(|m| serde_json::from_slice::<ChunkRecord>(&m.data).unwrap().seq)
        .nth(4)
        .unwrap();
    let tampered = record::read_files(&[tamper_noise(&files, &dir.join("tampered"), seq)]).unwrap();
    let robot = Robot::load(&robot_path()).unwrap();
    let r = replay(&tampered, &robot, policy(7), &info(7), true).unwrap();
    // The controller takes the recorded actions, so it still matches; the policy, fed the changed noise,
    // makes another chunk there (and RTC carries the difference into the chunk after it).
    assert_eq!(r.ticks_identical, r.ticks, "{r}");
    assert!(r.chunks_identical >= 4 && r.chunks_identical < r.chunks_compared, "{r}");
    assert_eq!(r.first_chunk_mismatch.as_ref().map(|m| m.at), Some(seq), "{r}");
    assert!(!r.identical());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_recording_that_dropped_ticks_is_refused_with_the_count() {
    let dir = temp_dir("dropped");
    let robot = Robot::load(&robot_path()).unwrap();
    let p = policy(0);
    let metadata = run_metadata(&info(0), &robot_path(), &p).unwrap();
    let (controller, frame) = Controller::for_robot(&p, &robot, info(0).execution).unwrap();
    let input = controller.new_input();
    let output = controller.new_output(frame);
    let mut rec = RunRecorder::create(&RecordOptions::new(&dir, "dropped"), &metadata, 0).unwrap();
    rec.tick(&input, &output, 0, 0).unwrap();
    rec.ticks_dropped(3);
    let files = rec.finish().unwrap().files;
    let e = replay(&record::read_files(&files).unwrap(), &robot, p, &info(0), false).unwrap_err();
    assert!(e.to_string().contains("dropped 3 ticks"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_robot_description_is_named_before_anything_is_replayed() {
    let dir = temp_dir("changed");
    let p = policy(0);
    let metadata = run_metadata(&info(0), &robot_path(), &p).unwrap();
    let robot = Robot::load(&robot_path()).unwrap();
    let (controller, frame) = Controller::for_robot(&p, &robot, info(0).execution).unwrap();
    let mut rec = RunRecorder::create(&RecordOptions::new(&dir, "changed"), &metadata, 0).unwrap();
    rec.tick(&controller.new_input(), &controller.new_output(frame), 0, 0).unwrap();
    let files = rec.finish().unwrap().files;
    let run = RecordedRun::of(&record::read_files(&files).unwrap()).unwrap();
    let copy = dir.join("edited.toml");
    let text = std::fs::read_to_string(robot_path()).unwrap();
    std::fs::write(&copy, format!("{text}\n# edited\n")).unwrap();
    let e = run.verify_files(&copy, &model("reach-dp")).unwrap_err().to_string();
    assert!(e.contains("edited.toml") && e.contains("not the robot description the run had"), "{e}");
    let meta: BTreeMap<_, _> = run.policy_files.clone();
    assert!(meta.contains_key("manifest.toml") && meta.keys().any(|k| k.ends_with(".onnx")), "{meta:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pypi_mcap_reads_a_recorded_run_with_the_same_counts_and_its_run_metadata() {
    let Some(py) = std::env::var_os("COXSWAIN_PYTHON").map(PathBuf::from) else {
        let msg = "no $COXSWAIN_PYTHON with the mcap package (scripts/test.sh installs it)";
        assert!(std::env::var("COXSWAIN_REQUIRE_PYTHON").as_deref() != Ok("1"), "{msg}");
        eprintln!("SKIPPED PyPI mcap reader test: {msg}");
        return;
    };
    let dir = temp_dir("pypi");
    let (files, _) = record_faulty_run(&dir, 8);
    let ours = record::read_files(&files).unwrap();
    let out =
        std::process::Command::new(&py).arg(repo().join("tests/record/read_mcap.py")).args(&files).output().unwrap();
    assert!(out.status.success(), "read_mcap.py: {}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for topic in [TICK_TOPIC, CHUNK_TOPIC, coxswain::record::EVENT_TOPIC, coxswain::record::LOG_TOPIC] {
        let n = ours.topic(topic).count() as u64;
        assert!(n > 0, "{topic} recorded");
        assert_eq!(seen["topics"][topic]["count"].as_u64(), Some(n), "{topic}");
    }
    assert_eq!(seen["topics"][TICK_TOPIC]["count"].as_u64(), Some(3000));
    assert!(seen["nonfinite_strings"].as_u64().unwrap() > 0);
    for name in [coxswain::record::RUN_METADATA, coxswain::record::ROBOT_METADATA, coxswain::record::POLICY_METADATA] {
        assert_eq!(seen["metadata"][name].as_array().map(Vec::len), Some(files.len()), "{name} in every file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
