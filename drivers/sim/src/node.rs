//! The simulated robot as a Zenoh node, on its own thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coxswain_config::Robot;
use coxswain_msg::{EStop, EStopAction, ImuSample, JointCommand, JointState, Quaternion, VectorSample};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::zenoh::pubsub::Subscriber;
use coxswain_zenoh::zenoh::{Session, Wait};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, RobotKeys};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arm::ArmModel;
use crate::clock::stamp_now_ns;
use crate::error::SimError;
use crate::faults::Faults;
use crate::task::{Episode, Outcome, ReachTask};

#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Seed of the measurement noise, the faults' dice and the episodes.
    pub seed: u64,
}

/// What the simulator is doing, for tests and the demo's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub q_rad: Vec<f64>,
    pub command_rad: Vec<f64>,
    pub estop_engaged: bool,
    pub steps: u64,
    pub commands_accepted: u64,
    /// Commands refused: wrong joint count, or while the e-stop is engaged.
    pub commands_refused: u64,
    pub states_published: u64,
    pub episode: Option<Episode>,
    pub outcome: Option<Outcome>,
}

struct Shared {
    q: Vec<f64>,
    qd: Vec<f64>,
    cmd: Vec<f64>,
    faults: Faults,
    estop: bool,
    steps: u64,
    accepted: u64,
    refused: u64,
    published: u64,
    task: Option<ReachTask>,
    episode: Option<Episode>,
    rng: ChaCha8Rng,
}

/// Controls a running simulator; dropping it stops the thread.
pub struct SimHandle {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _subscribers: Vec<Subscriber<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct SimNode;

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic on the sim thread poisons the lock; the data is still the simulator's last state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimNode {
    /// Starts a simulated `robot` on `session`, at its default pose, publishing at its state rate.
    pub fn spawn(session: &Session, robot: &Robot, options: SimOptions) -> Result<SimHandle, SimError> {
        let keys = RobotKeys::from_robot(robot)?;
        let mut model = ArmModel::from_robot(robot)?;
        let task = ReachTask::from_robot(robot)?;
        let has_task = task.is_some();
        let obstacle = task.as_ref().map(|t| t.config.obstacle_center_m);
        let n = model.joints();
        let q0 = robot.default_pose();
        let shared = Arc::new(Mutex::new(Shared {
            q: q0.clone(),
            qd: vec![0.0; n],
            cmd: q0,
            faults: Faults::default(),
            estop: false,
            steps: 0,
            accepted: 0,
            refused: 0,
            published: 0,
            task,
            episode: None,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
        }));
        let (cmd_sub, mut cmd_reader) = subscribe_latest::<JointCommand>(session, &keys.joint_command)?;
        // E-stops are events, as the runtime takes them: an engage followed by a reset within one step still
        // stops the drives (WIRE.md, receiver rules).
        let (estop_sub, estop_reader) = coxswain_zenoh::events::subscribe_events::<EStop>(session, &keys.estop, 64)?;
        let fault_key = keys.custom("sim/faults")?;
        let fault_shared = shared.clone();
        let fault_sub = session
            .declare_subscriber(fault_key.clone())
            .callback(move |sample| {
                let text = sample.payload().to_bytes();
                match std::str::from_utf8(&text).map_err(|e| e.to_string()).and_then(|t| t.parse::<Faults>()) {
                    Ok(f) => lock(&fault_shared).faults = f,
                    Err(e) => eprintln!("coxswain-sim: {fault_key}: {e}"),
                }
            })
            .wait()
            .map_err(|e| coxswain_zenoh::ZenohError::Declare {
                key: keys.custom("sim/faults").map_or_else(|_| String::new(), |k| k.to_string()),
                what: "subscriber",
                message: coxswain_zenoh::error::message(e),
            })?;
        let mut state_pub = ControlPublisher::<JointState>::new(session, &keys.joint_state, Qos::Control)?;
        // The reaching task's target, as a perception module would publish it (10 Hz).
        let mut target_pub = match (has_task, keys.sensor("target")) {
            (true, Ok(key)) => Some(ControlPublisher::<VectorSample>::new(session, key, Qos::Telemetry)?),
            _ => None,
        };
        // The task's obstacle, where the description declares an `obstacle` sensor (10 Hz, with the target):
        // what a perception node would publish for cost guidance to read.
        let mut obstacle_pub = match (obstacle, keys.sensor("obstacle")) {
            (Some(c), Ok(key)) => Some((ControlPublisher::<VectorSample>::new(session, key, Qos::Telemetry)?, c)),
            _ => None,
        };
        let target_every = ((robot.state_hz / 10.0).round() as u64).max(1);
        // An IMU, where the description declares one: the simulated robots are fixed-base, so it reads the
        // identity orientation, no rotation, and gravity's reaction (+9.81 m/s^2 on z).
        let imu_key = robot
            .topics
            .sensors
            .iter()
            .find(|(_, (_, kind))| *kind == coxswain_config::robot::SensorKind::Imu)
            .map(|(name, _)| name.clone());
        let mut imu_pub = match imu_key {
            Some(name) => Some(ControlPublisher::<ImuSample>::new(session, keys.sensor(&name)?, Qos::Control)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(1.0 / robot.state_hz);
        let thread_shared = shared.clone();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coxswain-sim".into())
            .spawn(move || {
                let h = period.as_secs_f64();
                let mut seq = 0u64;
                let mut frozen: Option<Vec<f32>> = None;
                let mut held: Option<JointState> = None;
                let mut delayed: VecDeque<(Instant, JointState)> = VecDeque::new();
                let mut last_cmd_seq = None;
                let mut effort = vec![0.0; n];
                let mut next = Instant::now();
                while !thread_stop.load(Ordering::Relaxed) {
                    let mut s = lock(&thread_shared);
                    while let Some(e) = estop_reader.pop() {
                        match e.value.action {
                            EStopAction::Engage => {
                                // Hold where the joints are now: after the reset, too, until a new command.
                                s.estop = true;
                                let here = s.q.clone();
                                s.cmd = here;
                            }
                            // A reset older than one already seen may predate an engage: ignored.
                            EStopAction::Reset if e.verdict != coxswain_zenoh::order::Verdict::Stale => {
                                s.estop = false;
                            }
                            EStopAction::Reset => {}
                        }
                    }
                    if estop_reader.take_overflow() > 0 {
                        s.estop = true;
                    }
                    if let Some(c) = cmd_reader.latest() {
                        if last_cmd_seq != Some(c.seq) {
                            last_cmd_seq = Some(c.seq);
                            if c.value.joint_count() != n || s.estop {
                                s.refused += 1;
                            } else {
                                s.accepted += 1;
                                for (dst, v) in s.cmd.iter_mut().zip(c.value.position_rad.iter()) {
                                    *dst = *v as f64;
                                }
                                // A full gain array sets the gains for this and later commands (WIRE.md 4.2).
                                if c.value.kp_nm_per_rad.len() == n {
                                    for (dst, v) in model.kp.iter_mut().zip(c.value.kp_nm_per_rad.iter()) {
                                        *dst = *v as f64;
                                    }
                                }
                                if c.value.kd_nm_s_per_rad.len() == n {
                                    for (dst, v) in model.kd.iter_mut().zip(c.value.kd_nm_s_per_rad.iter()) {
                                        *dst = *v as f64;
                                    }
                                }
                            }
                        }
                    }
                    let Shared { q, qd, cmd, estop, .. } = &mut *s;
                    if *estop {
                        // A drive-level stop: hold where the joints are, ignoring commands.
                        let here = q.clone();
                        model.step(q, qd, &here, h);
                    } else {
                        model.step(q, qd, cmd, h);
                    }
                    model.effort(&s.q, &s.qd, &s.cmd, &mut effort);
                    let q_now = s.q.clone();
                    if let Some(task) = s.task.as_mut() {
                        task.observe(&q_now);
                    }
                    s.steps += 1;
                    seq += 1;
                    let target =
                        if s.steps % target_every == 1 { s.episode.as_ref().map(|e| e.target_m) } else { None };
                    let faults = s.faults.clone();
                    let mut msg = JointState::default();
                    msg.header.seq = seq;
                    msg.header.stamp_ns = stamp_now_ns();
                    for (i, tau) in effort.iter().enumerate() {
                        let measured = model.measure(s.q[i], &mut s.rng) as f32;
                        let _ = msg.position_rad.push(if faults.nan { f32::NAN } else { measured });
                        let _ = msg.velocity_rad_s.push(s.qd[i] as f32);
                        let _ = msg.effort_nm.push(*tau as f32);
                    }
                    if faults.freeze {
                        let f = frozen.get_or_insert_with(|| msg.position_rad.to_vec());
                        for (dst, v) in msg.position_rad.iter_mut().zip(f.iter()) {
                            *dst = *v;
                        }
                    } else {
                        frozen = None;
                    }
                    let roll = |rng: &mut ChaCha8Rng| (rng.next_u32() as f64) / (u32::MAX as f64);
                    let lost =
                        faults.silence || (faults.drop_probability > 0.0 && roll(&mut s.rng) < faults.drop_probability);
                    let garbage = faults.garbage_probability > 0.0 && roll(&mut s.rng) < faults.garbage_probability;
                    let mut junk = [0u8; 24];
                    if garbage {
                        s.rng.fill_bytes(&mut junk);
                    }
                    drop(s);
                    if garbage && !faults.silence {
                        let _ = state_pub.publish_raw(&junk);
                    } else if !lost {
                        let due = Instant::now() + Duration::from_secs_f64(faults.delay_ms / 1000.0);
                        let out = if faults.reorder {
                            // Release the held one after this one: pairs leave swapped.
                            match held.take() {
                                Some(prev) => {
                                    delayed.push_back((due, msg));
                                    Some(prev)
                                }
                                None => {
                                    held = Some(msg);
                                    None
                                }
                            }
                        } else {
                            if let Some(prev) = held.take() {
                                delayed.push_back((due, prev));
                            }
                            Some(msg)
                        };
                        if let Some(m) = out {
                            delayed.push_back((due, m));
                        }
                    }
                    if let Some(p) = imu_pub.as_mut() {
                        let imu = ImuSample {
                            header: coxswain_msg::Header::new(seq, stamp_now_ns()),
                            orientation: Quaternion::IDENTITY,
                            angular_velocity_rad_s: [0.0; 3],
                            linear_acceleration_m_s2: [0.0, 0.0, 9.81],
                        };
                        let _ = p.publish(&imu);
                    }
                    if let (Some(p), Some(t)) = (target_pub.as_mut(), target) {
                        let _ = p.publish(&xy_sample(seq, t));
                        if let Some((p, c)) = obstacle_pub.as_mut() {
                            let _ = p.publish(&xy_sample(seq, *c));
                        }
                    }
                    let now = Instant::now();
                    while delayed.front().is_some_and(|(due, _)| *due <= now) {
                        if let Some((_, m)) = delayed.pop_front() {
                            if state_pub.publish(&m).is_ok() {
                                lock(&thread_shared).published += 1;
                            }
                        }
                    }
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > period * 10 {
                        // Far behind (a stalled machine): skip ahead rather than burst.
                        next = now;
                    }
                }
            })
            .map_err(|e| coxswain_zenoh::ZenohError::Open { message: format!("starting the simulator thread: {e}") })?;
        Ok(SimHandle { shared, stop, thread: Some(thread), _subscribers: vec![cmd_sub, estop_sub, fault_sub] })
    }
}

impl SimHandle {
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.shared).faults = faults;
    }

    /// Starts an episode of the reaching task: draws it and puts the arm at its start pose (the command
    /// too), as a test bench would. `None` when the robot has no task.
    pub fn new_episode(&self) -> Option<Episode> {
        let episode = self.draw_episode()?;
        let mut s = lock(&self.shared);
        s.q.clone_from(&episode.start_rad);
        s.cmd.clone_from(&episode.start_rad);
        s.qd.iter_mut().for_each(|v| *v = 0.0);
        Some(episode)
    }

    /// Draws the next episode and publishes its target, leaving the arm where it is: the runtime moves it
    /// to `start_rad` itself (homing), as it would on a real robot. Call [`SimHandle::begin_scoring`] when
    /// the policy takes over.
    pub fn draw_episode(&self) -> Option<Episode> {
        let mut s = lock(&self.shared);
        let Shared { task, rng, .. } = &mut *s;
        let episode = task.as_mut()?.sample(rng);
        s.episode = Some(episode.clone());
        Some(episode)
    }

    /// Draws episode `k` of `seed` (the same episode for the same pair, whatever was drawn before), the way
    /// [`SimHandle::draw_episode`] does: the task's episode protocol (`coxswain-sim`'s queryables).
    pub fn draw_episode_of(&self, seed: u64, k: u64) -> Option<Episode> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k);
        let mut s = lock(&self.shared);
        let episode = s.task.as_mut()?.sample(&mut rng);
        s.episode = Some(episode.clone());
        Some(episode)
    }

    /// Starts scoring the episode from here (the obstacle check ignores how the arm got to its start).
    pub fn begin_scoring(&self) {
        let mut s = lock(&self.shared);
        let q = s.q.clone();
        if let Some(t) = s.task.as_mut() {
            t.reset_scoring(&q);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = lock(&self.shared);
        let outcome = match (&s.task, &s.episode) {
            (Some(t), Some(e)) => Some(t.outcome(e, &s.q)),
            _ => None,
        };
        Snapshot {
            q_rad: s.q.clone(),
            command_rad: s.cmd.clone(),
            estop_engaged: s.estop,
            steps: s.steps,
            commands_accepted: s.accepted,
            commands_refused: s.refused,
            states_published: s.published,
            episode: s.episode.clone(),
            outcome,
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A point in the plane as a `Vector` message (the task's target, its obstacle), stamped now.
fn xy_sample(seq: u64, xy: [f64; 2]) -> VectorSample {
    let mut v = VectorSample::default();
    v.header.seq = seq;
    v.header.stamp_ns = stamp_now_ns();
    let _ = v.values.push(xy[0] as f32);
    let _ = v.values.push(xy[1] as f32);
    v
}
