"""Reference for tests/conventions.rs: the graph input a manifest's deploy conventions define, built from
their definitions (the manifest reference in runtime/src/policy/manifest.rs), not from coxswain's code.
Standard library only (Python 3.11: tomllib).

stdin:  {"manifest": "<path to manifest.toml>", "weights": "<path to weights.json>",
         "frames": [{"<field>": [raw values], ...}, ...],      one per policy tick
         "outputs": [[raw action], ...]}                       the graph's output at each tick
stdout: {"inputs": [[graph input], ...], "max_output_error": e}   (relative to max(1, |output|))

or, for the gains convention: stdin {"manifest": ..., "robot": "<robot description>"}, stdout {"kp": [...],
"kd": [...]} per robot joint; for a velocity joint (`wheel`) and an effort joint (`effort`): see those functions.

The definitions:
- A term reads `size` values per tick: a frame field, the last action (the previous tick's output, zeros at
  the first tick; clipped to [action] clip when [observation] last_action = "clipped"), constant `values`, or
  a gait phase.
- Phase: phi starts at 0. Each tick: if reset_field's Euclidean norm is below reset_below, phi = 0 and it
  does not advance; otherwise the tick reads phi and then phi = (phi + step_s / period_s) mod 1. sin_cos
  reads [sin(2 pi phi), cos(2 pi phi)], fraction reads [phi].
- History H: the term's values at ticks k-H+1 .. k, oldest first; ticks before the first repeat the first.
- Each value: (raw - offset) * scale, clipped to [low, high] after that (clip_stage "scaled", default) or
  clipped before it (clip_stage "raw"). clip = c means [-c, c]; clip = [lo, hi] every element; clip_low /
  clip_high per element, a missing side unbounded. offset and scale: one value, one per element, or one per
  element and history slot (oldest slot first).
- Layout: term_major (default) is every slot of term 1, then term 2, ...; frame_major is every term of the
  oldest slot, then the next slot.
- Parts: a graph input with a part list (io.observation_parts, encoders[].parts) is its parts in order: each
  run of consecutive term names is one block in the layout above, each `@encoder` is that encoder's output
  (here its linear layer, weights.json "encoder", applied to its own input). Without a list, every term.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib

JOINT_FIELDS = ("joint_pos", "joint_vel", "joint_effort", "last_action")


def expand(v, n, default):
    if v is None:
        return [default] * n
    if isinstance(v, (int, float)):
        return [float(v)] * n
    if len(v) == 1:
        return [float(v[0])] * n
    assert len(v) == n, (v, n)
    return [float(x) for x in v]


def per_slot(v, size, history, default):
    """offset/scale for each history slot: a list of `history` lists of `size`."""
    if isinstance(v, list) and len(v) == size * history and history > 1:
        return [[float(x) for x in v[h * size : (h + 1) * size]] for h in range(history)]
    one = expand(v, size, default)
    return [one for _ in range(history)]


def term_size(t, n_joints):
    f = t["field"]
    if f in JOINT_FIELDS:
        return n_joints
    if f in ("ang_vel", "projected_gravity", "lin_acc"):
        return 3
    if f == "constant":
        return len(t["values"])
    if f == "phase":
        return 1 if t.get("encoding") == "fraction" else 2
    return t["size"]


def clip_bounds(t, size):
    if "clip" in t:
        c = t["clip"]
        if isinstance(c, list):
            return [float(c[0])] * size, [float(c[1])] * size
        return [-float(c)] * size, [float(c)] * size
    if "clip_low" in t or "clip_high" in t:
        return expand(t.get("clip_low"), size, -math.inf), expand(t.get("clip_high"), size, math.inf)
    return None


def gains(req) -> dict:
    """Gains per robot joint, in the robot description's order: its kp/kd, replaced for every joint the
    policy drives (matched by name) by the manifest's [action] kp/kd (one value or one per policy joint)."""
    m = tomllib.loads(open(req["manifest"]).read())
    robot = tomllib.loads(open(req["robot"]).read())
    names = [j["name"] for j in robot["joints"]]
    out = {"kp": [float(j["kp"]) for j in robot["joints"]], "kd": [float(j["kd"]) for j in robot["joints"]]}
    joints = m["action"]["joints"]
    for key in ("kp", "kd"):
        if key in m["action"]:
            values = expand(m["action"][key], len(joints), 0.0)
            for name, v in zip(joints, values):
                out[key][names.index(name)] = v
    return out


def commands(req) -> dict:
    """Graph inputs of a manifest whose command term times out: each observation gives the command as the
    runtime had it (present or not, values, age) and the other fields. A command is zero before its first
    message, as received while at most timeout_s old, then scaled by max(0, 1 - (age - timeout_s) / decay_s);
    then the term's clip and scale apply as to any term (history 1 here)."""
    m = tomllib.loads(open(req["manifest"]).read())
    terms = m["observation"]["terms"]
    n_joints = len(m["action"]["joints"])
    inputs = []
    for o in req["observations"]:
        x = []
        for t in terms:
            size = term_size(t, n_joints)
            if "timeout_s" in t:
                c = o[t["field"]]
                age, timeout, decay = c["age_s"], t["timeout_s"], t.get("decay_s", 0.0)
                if not c["present"]:
                    k = 0.0
                elif age <= timeout:
                    k = 1.0
                else:
                    k = max(0.0, 1.0 - (age - timeout) / decay) if decay > 0 else 0.0
                raw = [k * v for v in c["values"]] if c["present"] else [0.0] * size
            else:
                raw = o[t["field"]]
            off, scale = expand(t.get("offset"), size, 0.0), expand(t.get("scale"), size, 1.0)
            bounds = clip_bounds(t, size)
            for j in range(size):
                r = raw[j]
                if bounds is not None and t.get("clip_stage") == "raw":
                    r = min(max(r, bounds[0][j]), bounds[1][j])
                v = (r - off[j]) * scale[j]
                if bounds is not None and t.get("clip_stage") != "raw":
                    v = min(max(v, bounds[0][j]), bounds[1][j])
                x.append(v)
        inputs.append(x)
    return {"inputs": inputs}


def wheel(req) -> dict:
    """A velocity joint's commanded velocity, tick by tick, from the proposals (velocity targets): each tick
    the velocity moves toward the target clamped to +-v_max, by at most a_max * dt, starting at rest."""
    v_max, a_max, dt = req["v_max"], req["a_max"], req["dt"]
    v, out = 0.0, []
    for p in req["proposals"]:
        if p is None:  # no proposal this tick: a hold, which brings the wheel to rest the same way
            p = 0.0
        goal = min(max(p, -v_max), v_max)
        v += min(max(goal - v, -a_max * dt), a_max * dt)
        out.append(v)
    return {"velocities": out}


def effort(req) -> dict:
    """An effort joint's commanded torque, tick by tick, from the proposals (torques) and the measured state:
    with no proposal there is no torque control (a hold holds the joint by position). Otherwise the torque is
    clipped to +-effort_nm, then cut to 0 when it pushes outward while the joint's stopping point at a_max,
    q + qd |qd| / (2 a_max), is at or past its position limits less the margin (min(position_margin_rad, a
    tenth of the range)), or when the measured speed is at or above v_max and the torque has the velocity's
    sign."""
    lo, hi = req["limits_rad"]
    margin = min(req["position_margin_rad"], 0.1 * (hi - lo))
    soft_lo, soft_hi = lo + margin, hi - margin
    e, v_max, a_max = req["effort_nm"], req["v_max"], req["a_max"]
    out = []
    for p, q, qd in zip(req["torques"], req["q"], req["qd"]):
        if p is None:
            out.append({"torque": False, "effort_nm": 0.0, "why": None})
            continue
        tau, why = min(max(p, -e), e), None
        if tau != p:
            why = "effort"
        stop_at = q + qd * abs(qd) / (2 * a_max)
        if (stop_at >= soft_hi and tau > 0) or (stop_at <= soft_lo and tau < 0):
            tau, why = 0.0, "position"
        if abs(qd) >= v_max and tau * qd > 0:
            tau, why = 0.0, "velocity"
        out.append({"torque": True, "effort_nm": tau, "why": why})
    return {"ticks": out}


def main() -> None:
    req = json.load(sys.stdin)
    if "torques" in req:
        json.dump(effort(req), sys.stdout)
        return
    if "proposals" in req:
        json.dump(wheel(req), sys.stdout)
        return
    if "observations" in req:
        json.dump(commands(req), sys.stdout)
        return
    if "robot" in req:
        json.dump(gains(req), sys.stdout)
        return
    m = tomllib.loads(open(req["manifest"]).read())
    weights = json.load(open(req["weights"]))
    obs = m["observation"]
    terms = obs["terms"]
    layout = obs.get("history_layout", "term_major")
    feedback = obs.get("last_action", "raw")
    action_clip = m["action"].get("clip")
    n_joints = len(m["action"]["joints"])
    frames, outputs = req["frames"], req["outputs"]
    ticks = len(frames)

    # Per tick, per term: the raw values the term reads.
    raw = [[None] * len(terms) for _ in range(ticks)]
    for ti, t in enumerate(terms):
        f = t["field"]
        if f == "phase":
            phi = 0.0
            for k in range(ticks):
                still = False
                if "reset_field" in t:
                    norm = math.sqrt(sum(v * v for v in frames[k][t["reset_field"]]))
                    still = norm < t["reset_below"]
                if still:
                    phi = 0.0
                angle = 2.0 * math.pi * phi
                raw[k][ti] = [phi] if t.get("encoding") == "fraction" else [math.sin(angle), math.cos(angle)]
                if not still:
                    phi = math.fmod(phi + t["step_s"] / t["period_s"], 1.0)
        elif f == "constant":
            for k in range(ticks):
                raw[k][ti] = [float(v) for v in t["values"]]
        elif f == "last_action":
            for k in range(ticks):
                if k == 0:
                    a = [0.0] * n_joints
                else:
                    a = [float(v) for v in outputs[k - 1]]
                    if feedback == "clipped":
                        a = [min(max(v, action_clip[0]), action_clip[1]) for v in a]
                raw[k][ti] = a
        else:
            for k in range(ticks):
                raw[k][ti] = [float(v) for v in frames[k][f]]

    def value(ti, k, h):
        t = terms[ti]
        size = term_size(t, n_joints)
        hist = t.get("history", 1)
        tick = max(0, k - (hist - 1 - h))
        off = per_slot(t.get("offset"), size, hist, 0.0)[h]
        scale = per_slot(t.get("scale"), size, hist, 1.0)[h]
        bounds = clip_bounds(t, size)
        out = []
        for j, r in enumerate(raw[tick][ti]):
            if bounds is not None and t.get("clip_stage") == "raw":
                r = min(max(r, bounds[0][j]), bounds[1][j])
                v = (r - off[j]) * scale[j]
            else:
                v = (r - off[j]) * scale[j]
                if bounds is not None:
                    v = min(max(v, bounds[0][j]), bounds[1][j])
            out.append(v)
        return out

    names = [t.get("name", t["field"]) for t in terms]

    def block(indices, k):
        """Terms `indices` at tick k, laid out per the manifest's history layout."""
        x = []
        if layout == "frame_major":
            for h in range(terms[indices[0]].get("history", 1)):
                for ti in indices:
                    x += value(ti, k, h)
        else:
            for ti in indices:
                for h in range(terms[ti].get("history", 1)):
                    x += value(ti, k, h)
        return x

    def build(parts, k, enc_out):
        """A part list at tick k: runs of consecutive terms as blocks, `@encoder` outputs whole."""
        x, run = [], []
        for p in parts + [None]:
            if p is not None and not p.startswith("@"):
                run.append(names.index(p))
                continue
            if run:
                x += block(run, k)
                run = []
            if p is not None:
                x += enc_out[p[1:]]
        return x

    def linear(w, b, x):
        return [sum(wi * v for wi, v in zip(row, x)) + bi for row, bi in zip(w, b)]

    inputs = []
    for k in range(ticks):
        enc_out = {}
        for e in m.get("encoders", []):
            ex = build(e["parts"], k, {}) if "parts" in e else block(list(range(len(terms))), k)
            enc_out[e["name"]] = linear(weights["encoder"]["W"], weights["encoder"]["b"], ex)
        parts = m["io"].get("observation_parts")
        inputs.append(build(parts, k, enc_out) if parts else block(list(range(len(terms))), k))

    err = 0.0
    for x, y in zip(inputs, outputs):
        for row, b, got in zip(weights["W"], weights["b"], y):
            want = sum(w * v for w, v in zip(row, x)) + b
            err = max(err, abs(want - got) / max(1.0, abs(want)))
    json.dump({"inputs": inputs, "max_output_error": err}, sys.stdout)


if __name__ == "__main__":
    main()
