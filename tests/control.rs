//! The control loop on the simulated arm, in simulated time (lockstep: deterministic, no Zenoh, no real
//! time) for the fault cases, each ending in the documented safe state (runtime/src/safety/mod.rs has the
//! state table) with every limit checked on every tick, and a reproducibility check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::control::executor::{Interpolation, Overlap};
use coxswain::control::inference::InferenceWorker;
use coxswain::control::io::{ChunkIn, ControlInput, ControlOutput, EStopIn, Joints, Request};
use coxswain::control::lockstep::{Latency, Lockstep, Plant};
use coxswain::control::{Controller, Event, ExecutionOptions, RtcMode};
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::safety::{SafetyConfig, SafetyFilter, SafetyState, StopReason};
use coxswain_cli::plant::ArmPlant;
use coxswain_config::Robot;
use coxswain_tests::{model, ort, repo};

fn sim_arm() -> Robot {
    Robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap()
}

fn execution() -> ExecutionOptions {
    ExecutionOptions {
        execute_actions: 8,
        interpolation: Interpolation::Cubic,
        overlap: Overlap::Latest,
        rtc: RtcMode::Inpaint,
    }
}

/// The arm with faults a test can switch on.
struct Faulty {
    arm: ArmPlant,
    dt_s: f64,
    silence: bool,
    malformed: bool,
    estop: Vec<EStopIn>,
    foreign_per_tick: u64,
    foreign_total: u64,
}

impl Plant for Faulty {
    fn measure(&mut self, input: &mut ControlInput) {
        if self.silence {
            input.state.age_s += self.dt_s;
        } else {
            self.arm.measure(input);
            if self.malformed {
                input.state.joints = 2;
                input.state.position_rad.truncate(2);
            }
        }
        for e in self.estop.drain(..) {
            input.estop.push(e).unwrap();
        }
        self.foreign_total += self.foreign_per_tick;
        input.foreign_commands = self.foreign_total;
    }

    fn advance(&mut self, command_rad: Option<&[f64]>, dt_s: f64) {
        self.arm.advance(command_rad, dt_s);
    }
}

/// Lockstep rig: reach-dp on the simulated arm, every command checked against the limits.
struct Rig {
    ls: Lockstep,
    plant: Faulty,
    limits: Vec<(f64, f64)>,
    dt_s: f64,
    last: Option<(Vec<f64>, Vec<f64>)>,
    /// Largest |dq| / (v_max dt) and |dv| / (a_max dt) seen between consecutive enabled commands.
    worst_v: f64,
    worst_a: f64,
    events: Vec<Event>,
}

fn rig(seed: u64) -> Rig {
    let robot = sim_arm();
    let policy = Policy::load(ort(), &model("reach-dp"), &PolicyOptions::default()).unwrap();
    let manifest = policy.manifest().clone();
    let map = coxswain::policy::robot::bind(&manifest, &robot).unwrap();
    let cfg = SafetyConfig::from_robot(&robot).unwrap();
    let limits = cfg.joints().iter().map(|j| (j.velocity_rad_s, j.acceleration_rad_s2)).collect();
    let frame = policy.new_frame();
    let controller = Controller::new(&manifest, map, &frame, SafetyFilter::new(cfg), execution()).unwrap();
    let target = controller.vector_fields().iter().position(|n| n == "target");
    let worker = InferenceWorker::new(policy, RtcMode::Inpaint, seed).unwrap();
    let ls = Lockstep::new(controller, worker, frame, robot.control_hz, Latency::Ticks(3)).unwrap();
    let mut arm = ArmPlant::new(&robot, seed, target, None).unwrap();
    arm.draw_episode();
    Rig {
        ls,
        plant: Faulty {
            arm,
            dt_s: 1.0 / robot.control_hz,
            silence: false,
            malformed: false,
            estop: vec![],
            foreign_per_tick: 0,
            foreign_total: 0,
        },
        limits,
        dt_s: 1.0 / robot.control_hz,
        last: None,
        worst_v: 0.0,
        worst_a: 0.0,
        events: vec![],
    }
}

impl Rig {
    fn step(&mut self, requests: &[Request]) -> &ControlOutput {
        let out = self.ls.step(&mut self.plant, requests);
        self.events.extend(out.events.iter().copied());
        if out.enable {
            let q: Vec<f64> = out.position_rad.to_vec();
            let v: Vec<f64> = out.velocity_rad_s.to_vec();
            if let Some((q0, v0)) = &self.last {
                for j in 0..q.len() {
                    let (vmax, amax) = self.limits[j];
                    self.worst_v = self.worst_v.max((q[j] - q0[j]).abs() / (vmax * self.dt_s));
                    self.worst_a = self.worst_a.max((v[j] - v0[j]).abs() / (amax * self.dt_s));
                }
            }
            self.last = Some((q, v));
        } else {
            self.last = None;
        }
        self.ls.output()
    }

    fn run(&mut self, seconds: f64) {
        for _ in 0..(seconds / self.dt_s).round() as usize {
            self.step(&[]);
        }
    }

    fn run_until(&mut self, seconds: f64, mut f: impl FnMut(&Rig) -> bool) -> bool {
        for _ in 0..(seconds / self.dt_s).round() as usize {
            self.step(&[]);
            if f(self) {
                return true;
            }
        }
        false
    }

    fn state(&self) -> SafetyState {
        self.ls.output().state
    }

    fn command(&self) -> Vec<f64> {
        self.ls.output().position_rad.to_vec()
    }

    /// Arm, start, and run until the policy drives the arm with a few chunks in.
    fn running(&mut self) {
        self.step(&[Request::Arm, Request::Start]);
        assert!(self
            .run_until(3.0, |r| r.state() == SafetyState::Running && r.ls.controller().stats().chunks_accepted >= 3));
        self.run(0.5);
    }

    fn assert_within_limits(&self) {
        // A hair of slack for floating-point rounding in the filter's arithmetic.
        assert!(self.worst_v <= 1.0 + 1e-9, "velocity limit exceeded by {:.6}x", self.worst_v);
        assert!(self.worst_a <= 1.0 + 1e-9, "acceleration limit exceeded by {:.6}x", self.worst_a);
    }

    fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

#[test]
fn stale_state_holds_within_the_limits_and_resumes_without_a_jump() {
    let mut r = rig(1);
    r.running();
    r.plant.silence = true;
    assert!(r.run_until(1.0, |r| r.state() == SafetyState::Holding), "stale state -> Holding");
    r.run(0.5);
    let a = r.command();
    r.run(0.2);
    assert_eq!(r.command(), a, "held still while the state is stale");
    r.plant.silence = false;
    assert!(r.run_until(1.0, |r| r.state() == SafetyState::Running), "a soft hold resumes by itself");
    r.run(1.0);
    // The limits held on every tick of the hold and of the resumption: no jump, in position or velocity.
    r.assert_within_limits();
    assert!(r.last.is_some(), "the drives stayed on throughout");
}

#[test]
fn estop_mid_motion_stops_within_the_limits_and_latches_until_reset() {
    let mut r = rig(2);
    r.running();
    r.plant.estop.push(EStopIn::Engage);
    assert!(r.run_until(2.0, |r| r.state() == SafetyState::Fault), "the stop completes in Fault (latched)");
    r.assert_within_limits();
    let held = r.command();
    r.run(1.0);
    assert_eq!(r.command(), held, "category 2: holds position while latched");
    assert_eq!(r.state(), SafetyState::Fault, "still latched although chunks keep coming");
    r.plant.estop.push(EStopIn::Reset { stale: false });
    assert!(r.run_until(0.5, |r| r.state() == SafetyState::Holding), "reset -> Holding, never straight to Running");
    r.run(0.3);
    assert_eq!(r.state(), SafetyState::Holding);
    assert_eq!(r.command(), held, "still where it stopped");
}

#[test]
fn an_engage_and_a_reset_in_the_same_tick_still_stop_the_arm() {
    let mut r = rig(3);
    r.running();
    r.plant.estop.push(EStopIn::Engage);
    r.plant.estop.push(EStopIn::Reset { stale: false });
    r.step(&[]);
    assert_eq!(r.state(), SafetyState::Stopping, "the engage latched although a reset followed it");
    assert!(r.run_until(2.0, |r| r.state() == SafetyState::Holding), "the reset applies after the stop");
    assert!(r.saw(|e| matches!(e, Event::SafetyTransition { transition: t } if t.to == SafetyState::Fault)));
    r.assert_within_limits();
}

#[test]
fn a_reset_leaves_the_robot_still_until_it_is_armed_again() {
    let mut r = rig(4);
    r.running();
    r.plant.estop.push(EStopIn::Engage);
    assert!(r.run_until(2.0, |r| r.state() == SafetyState::Fault));
    r.plant.estop.push(EStopIn::Reset { stale: false });
    assert!(r.run_until(0.5, |r| r.state() == SafetyState::Holding));
    let held = r.command();
    r.events.clear();
    r.step(&[Request::Start]);
    r.run(0.5);
    assert!(r.saw(|e| matches!(e, Event::Refused { request: "start", .. })), "start without arming is refused");
    assert_eq!(r.state(), SafetyState::Holding);
    assert_eq!(r.command(), held, "nothing moved");
    r.step(&[Request::Arm, Request::Start]);
    assert!(r.run_until(3.0, |r| r.state() == SafetyState::Running), "armed again, the policy runs");
}

#[test]
fn an_estop_while_idle_then_a_reset_never_moves_the_arm() {
    let mut r = rig(5);
    r.step(&[Request::Arm]);
    r.run(0.1);
    r.plant.estop.push(EStopIn::Engage);
    r.run(0.1);
    assert_eq!(r.state(), SafetyState::Fault);
    r.plant.estop.push(EStopIn::Reset { stale: false });
    r.step(&[Request::Start]);
    r.run(1.0);
    assert_eq!(r.state(), SafetyState::Idle, "reset from an idle stop -> Idle");
    assert!(!r.ls.output().enable, "drives stay off");
    assert!(r.saw(|e| matches!(e, Event::Refused { request: "start", .. })));
}

#[test]
fn a_stale_reset_is_ignored() {
    let mut r = rig(6);
    r.running();
    r.plant.estop.push(EStopIn::Engage);
    assert!(r.run_until(2.0, |r| r.state() == SafetyState::Fault));
    r.plant.estop.push(EStopIn::Reset { stale: true });
    r.run(0.5);
    assert_eq!(r.state(), SafetyState::Fault, "an out-of-order reset does not clear the stop");
    assert!(r.saw(|e| matches!(e, Event::EStopStaleReset)));
}

#[test]
fn joint_state_with_the_wrong_joint_count_that_lasts_latches_a_stop() {
    let mut r = rig(7);
    r.running();
    r.plant.malformed = true;
    assert!(
        r.run_until(1.0, |r| r.ls.controller().safety().latched() == Some(StopReason::NonFiniteState)),
        "malformed state for longer than the timeout is a latched stop, not a soft hold"
    );
    r.plant.malformed = false;
    r.run(1.0);
    assert!(matches!(r.state(), SafetyState::Stopping | SafetyState::Fault), "it does not resume by itself");
    assert!(r.saw(|e| matches!(e, Event::MalformedState { joints: 2, expected: 3 })));
    r.assert_within_limits();
}

#[test]
fn commands_from_another_publisher_that_persist_latch_a_stop() {
    let mut r = rig(8);
    r.running();
    // One stray command: counted and reported, nothing else.
    r.plant.foreign_per_tick = 1;
    r.step(&[]);
    r.plant.foreign_per_tick = 0;
    r.run(0.5);
    assert_eq!(r.state(), SafetyState::Running);
    assert!(r.saw(|e| matches!(e, Event::ForeignCommands { total: 1 })));
    // A second controller at 250 Hz.
    let mut k = 0;
    let stopped = {
        let mut stopped = false;
        for _ in 0..500 {
            k += 1;
            r.plant.foreign_per_tick = u64::from(k % 2 == 0);
            r.step(&[]);
            if r.ls.controller().safety().latched() == Some(StopReason::ForeignCommands) {
                stopped = true;
                break;
            }
        }
        stopped
    };
    assert!(stopped, "persistent foreign commands latch a stop");
    assert!(r.run_until(2.0, |r| r.state() == SafetyState::Fault));
    r.assert_within_limits();
}

/// A controller fed hand-made chunks (no policy): NaN chunks and an inference stall.
fn scripted(chunks: impl Fn(usize, &mut [f64]) -> bool) -> (Vec<SafetyState>, coxswain::control::ControlStats, bool) {
    let robot = sim_arm();
    let policy = Policy::load(ort(), &model("reach-dp"), &PolicyOptions::default()).unwrap();
    let manifest = policy.manifest().clone();
    let map = coxswain::policy::robot::bind(&manifest, &robot).unwrap();
    let frame = policy.new_frame();
    let safety = SafetyFilter::new(SafetyConfig::from_robot(&robot).unwrap());
    let mut c = Controller::new(&manifest, map, &frame, safety, execution()).unwrap();
    let mut input = c.new_input();
    let mut out = c.new_output(frame);
    let mut arm = ArmPlant::new(&robot, 9, c.vector_fields().iter().position(|n| n == "target"), None).unwrap();
    arm.draw_episode();
    let dt = 1.0 / robot.control_hz;
    let mut states = vec![];
    let mut made = 0;
    let mut due: Option<(u64, ChunkIn)> = None;
    let mut non_finite = false;
    for k in 0..3000u64 {
        input.tick = k;
        input.t_s = k as f64 * dt;
        input.requests.clear();
        if k == 0 {
            input.requests.push(Request::Arm).unwrap();
            input.requests.push(Request::Start).unwrap();
        }
        input.chunk = None;
        arm.measure(&mut input);
        if let Some((t, ch)) = due {
            if t <= k {
                input.chunk = Some(ch);
                due = None;
            }
        }
        c.step(&input, &mut out);
        non_finite |= out.position_rad.iter().chain(&out.velocity_rad_s).any(|v| !v.is_finite());
        arm.advance(out.enable.then_some(&out.position_rad[..]), dt);
        states.push(out.state);
        if let Some(req) = out.request {
            if req.infer {
                let q = arm.position_rad().to_vec();
                for (i, v) in input.chunk_rad.iter_mut().enumerate() {
                    *v = q[i % 3];
                }
                if chunks(made, &mut input.chunk_rad) {
                    due = Some((
                        k + 2,
                        ChunkIn { seq: req.seq, t0_s: req.t_s, requested_t_s: req.sent_t_s, rtc: false, generation: 0 },
                    ));
                }
                made += 1;
            }
        }
    }
    (states, c.stats(), non_finite)
}

#[test]
fn a_nan_chunk_is_rejected_whole_and_nothing_non_finite_is_commanded() {
    let (states, stats, non_finite) = scripted(|n, buf| {
        if n >= 1 {
            buf[17] = f64::NAN; // one value of every later chunk
        }
        true
    });
    assert_eq!(stats.chunks_accepted, 1, "{stats:?}");
    assert!(stats.chunks_rejected >= 2, "{stats:?}");
    assert!(!non_finite);
    assert_eq!(states.last(), Some(&SafetyState::Holding), "the good chunk runs out: Holding");
}

#[test]
fn an_inference_stall_holds_when_the_chunk_runs_out() {
    // Two chunks, then silence (a hung accelerator, a dead thread).
    let (states, stats, _) = scripted(|n, _| n < 2);
    assert_eq!(stats.chunks_accepted, 2, "{stats:?}");
    assert!(stats.starved_ticks > 0);
    let running = states.iter().position(|s| *s == SafetyState::Running).unwrap();
    assert!(states[running..].contains(&SafetyState::Holding), "starved -> Holding");
    assert_eq!(states.last(), Some(&SafetyState::Holding));
}

#[test]
fn two_lockstep_runs_with_one_seed_produce_identical_commands() {
    let trace = |seed: u64| {
        let mut r = rig(seed);
        r.running();
        let mut out = vec![];
        for _ in 0..1500 {
            let o = r.step(&[]);
            out.extend(o.position_rad.iter().map(|v| v.to_bits()));
        }
        (out, r.ls.controller().stats().chunks_accepted)
    };
    let (a, chunks) = trace(11);
    let (b, _) = trace(11);
    assert!(chunks >= 5, "the policy ran: {chunks} chunks");
    assert_eq!(a, b, "bit-for-bit identical commands");
    let (c, _) = trace(12);
    assert_ne!(a, c, "another seed gives another run (the comparison can fail)");
}

#[test]
fn homing_request_moves_the_arm_to_the_target_then_holds() {
    let mut r = rig(13);
    let target: Joints = [-1.0, 1.2, 0.4].into_iter().collect();
    r.step(&[Request::Arm, Request::Home { target_rad: target.clone() }]);
    assert!(r.run_until(10.0, |r| r.saw(|e| matches!(e, Event::SafetyTransition { transition: t }
        if t.to == SafetyState::Holding))));
    let q = r.command();
    for (a, b) in q.iter().zip(&target) {
        assert!((a - b).abs() < 0.02, "homed to {q:?}, asked {target:?}");
    }
    r.assert_within_limits();
}

/// Scores candidate i as i: the last one wins.
#[derive(Debug)]
struct LastCandidate;

impl coxswain::steering::select::Selector for LastCandidate {
    fn select(&mut self, _input: &coxswain::steering::select::SelectInput<'_>, scores: &mut [f32]) -> usize {
        for (i, s) in scores.iter_mut().enumerate() {
            *s = i as f32;
        }
        coxswain::steering::select::argmax(scores)
    }

    fn name(&self) -> &'static str {
        "last"
    }
}

/// One inference through a worker on reach-dp with 4 candidates: the chunk it hands over, and the policy's
/// candidates.
fn one_chunk(worker: &mut InferenceWorker) -> (Vec<f64>, Vec<Vec<f64>>) {
    use coxswain::control::inference::WorkerRequest;
    use coxswain::control::io::ObservationRequest;
    let mut frame = worker.policy().new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.25, 0.35]).unwrap();
    let request = ObservationRequest { seq: 1, t_s: 0.0, sent_t_s: 0.0, infer: true, rtc: None };
    let len = 16 * 3;
    let msg = worker
        .handle(
            WorkerRequest::Observe { frame, request },
            &mut |_| {},
            &mut || Some(vec![0.0; len].into_boxed_slice()),
            &mut |e| panic!("{e}"),
        )
        .expect("a chunk");
    let chunk = worker.policy().chunk();
    let candidates =
        (0..chunk.candidates).map(|i| chunk.candidate(i).iter().map(|&v| f64::from(v)).collect()).collect();
    (msg.actions_rad.to_vec(), candidates)
}

#[test]
fn the_worker_executes_the_candidate_its_selector_chooses_and_keeps_the_scores() {
    let options = PolicyOptions { candidates: 4, seed: 2, ..PolicyOptions::default() };
    let load = || Policy::load(ort(), &model("reach-dp"), &options).unwrap();
    let mut steered = InferenceWorker::new(load(), RtcMode::Inpaint, 2).unwrap().with_selector(Box::new(LastCandidate));
    let (actions, candidates) = one_chunk(&mut steered);
    assert_eq!(candidates.len(), 4);
    assert_ne!(candidates[0], candidates[3], "the candidates differ");
    assert_eq!(actions, candidates[3]);
    let trace = steered.trace();
    assert_eq!((trace.selected, trace.scores.as_slice()), (3, &[0.0, 1.0, 2.0, 3.0][..]));
    assert_eq!(steered.selector(), "last");

    // Unsteered, the same draw executes candidate 0, as before the seam.
    let mut plain = InferenceWorker::new(load(), RtcMode::Inpaint, 2).unwrap();
    let (actions, same) = one_chunk(&mut plain);
    assert_eq!(same, candidates);
    assert_eq!(actions, candidates[0]);
    assert_eq!(plain.trace().selected, 0);
}
