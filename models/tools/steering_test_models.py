"""Generate the TEST models of models/steering-test/: tiny hand-set ONNX graphs for plumbing tests of the
inference-time steering stages (noise, critic, edit, residual) around the reach-dp base policy.

    python models/tools/steering_test_models.py [--out DIR]

These are NOT trained models. Every weight is set by hand so that each output has a closed-form value the
tests can assert (a constant, a NaN, a 1e6, the tool's distance from the obstacle). Needs only onnx, numpy and
onnxruntime (no torch): the graphs are written with onnx.helper / onnx.numpy_helper.

Shapes come from models/reach-dp/manifest.toml (observation size, horizon H, joints A, the [action]
scale/offset); the arm's link lengths and the obstacle centre from firmware-configs/sim-arm.toml. Every file is
opset 17, ir_version 8, float32, batch axis dynamic ("batch"), and carries metadata_props test_model = "true".
Each one is checked with onnx.checker (full_check) and run with onnxruntime at batch 1 and 5 against a numpy
reference of its definition (1e-5; the constant ones bit for bit). The output is deterministic: fixed producer
name and version, no timestamps, so re-running writes byte-identical files. Also writes MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE_MANIFEST = REPO / "models" / "reach-dp" / "manifest.toml"
ARM_CONFIG = REPO / "firmware-configs" / "sim-arm.toml"
DEFAULT_OUT = REPO / "models" / "steering-test"

OPSET = 17
IR_VERSION = 8  # onnx 1.12's, the one of opset 17 (as the torch exports of models/reach-*)
PRODUCER = "coxswain models/tools/steering_test_models.py"
PRODUCER_VERSION = "1"
ATOL = 1e-5
BATCHES = (1, 5)
SEED = 0
F32 = np.float32

# Hand-set values of the test models.
NOISE_MEAN = 0.3
NOISE_LOG_STD = -1.0
LATENT_MEAN = [0.3, -0.2, 0.1]
SHIFT_JOINT = 0
SHIFT_RAD = 0.05
HUGE = 1e6
HUGE_SIGN = [1.0, -1.0, 1.0]
PULL_GAIN = 0.5


# ---------------------------------------------------------------------------------------------------- config


def load_config() -> dict:
    """Everything the graphs need from the two TOML files."""
    with BASE_MANIFEST.open("rb") as f:
        man = tomllib.load(f)
    with ARM_CONFIG.open("rb") as f:
        arm = tomllib.load(f)

    act = man["action"]
    joints = list(act["joints"])
    a = len(joints)
    scale = np.asarray(act["scale"], dtype=np.float64)
    offset = np.asarray(act["offset"], dtype=np.float64)
    assert scale.shape == (a,) and offset.shape == (a,), "reach-dp [action] scale/offset must have one value per joint"
    obs_dim = sum(len(t["offset"]) for t in man["observation"]["terms"])
    for t in man["observation"]["terms"]:
        assert len(t["scale"]) == len(t["offset"])

    # Planar arm: every axis +z, joint 0 at the origin, each next joint (and the tool) along its parent's x.
    arm_joints = arm["joints"]
    assert [j["name"] for j in arm_joints] == joints, "reach-dp's joints must be sim-arm's, in order"
    for j in arm_joints:
        assert list(j["axis"]) == [0.0, 0.0, 1.0], f"joint {j['name']}: only +z axes (planar arm) are supported"
    assert list(arm_joints[0]["parent_from_joint_xyz_m"]) == [0.0, 0.0, 0.0], "joint 0 must sit at the origin"
    offsets = [j["parent_from_joint_xyz_m"] for j in arm_joints[1:]] + [arm["end_effector"]["parent_from_tool_xyz_m"]]
    for xyz in offsets:
        assert xyz[1] == 0.0 and xyz[2] == 0.0, f"link offset {xyz}: only offsets along the parent's x are supported"
    links = np.asarray([xyz[0] for xyz in offsets], dtype=np.float64)  # link i: joint i -> joint i + 1 (or tool)
    obstacle = np.asarray(arm["task"]["reach"]["obstacle_center_m"], dtype=np.float64)
    assert obstacle.shape == (2,)

    return {
        "name": man["model"]["name"],
        "obs_dim": obs_dim,
        "horizon": int(act["horizon"]),
        "joints": joints,
        "act_dim": a,
        "scale": scale,
        "offset": offset,
        "links": links,
        "obstacle": obstacle,
    }


# ---------------------------------------------------------------------------------------------------- graph helpers


def tensor_info(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def const(name: str, value, dtype=F32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def batch_shape_nodes(src: str, tail: list[int], out: str) -> tuple[list, list]:
    """Nodes computing the int64 shape [batch of `src`, *tail] as tensor `out` (depends on the input's batch size
    only, never on its values)."""
    nodes = [
        helper.make_node("Shape", [src], [f"{out}_full"], start=0, end=1),  # [batch]
        helper.make_node("Concat", [f"{out}_full", f"{out}_tail"], [out], axis=0),
    ]
    inits = [const(f"{out}_tail", tail, np.int64)]
    return nodes, inits


def make_model(name: str, doc: str, nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits, doc_string=doc)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string="TEST MODEL (hand-set weights, not trained; for plumbing tests only): " + doc,
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    helper.set_model_props(
        model,
        {
            "test_model": "true",
            "trained": "false",
            "purpose": "plumbing tests of inference-time steering stages; hand-set weights",
            "base_policy": "reach-dp",
            "generator": "models/tools/steering_test_models.py",
        },
    )
    return model


# ---------------------------------------------------------------------------------------------------- the models


def noise_constant(cfg: dict) -> onnx.ModelProto:
    h, a, d = cfg["horizon"], cfg["act_dim"], cfg["obs_dim"]
    nodes, inits = batch_shape_nodes("obs", [h, a], "out_shape")
    nodes += [
        helper.make_node("Expand", ["mean_value", "out_shape"], ["mean"]),
        helper.make_node("Expand", ["log_std_value", "out_shape"], ["log_std"]),
    ]
    inits += [const("mean_value", NOISE_MEAN), const("log_std_value", NOISE_LOG_STD)]
    doc = f"obs [batch,{d}] -> mean [batch,{h},{a}] = {NOISE_MEAN}, log_std [batch,{h},{a}] = {NOISE_LOG_STD}, whatever obs is."
    return make_model(
        "noise_constant",
        doc,
        nodes,
        [tensor_info("obs", ["batch", d])],
        [tensor_info("mean", ["batch", h, a]), tensor_info("log_std", ["batch", h, a])],
        inits,
    )


def noise_latent(cfg: dict) -> onnx.ModelProto:
    a, d = cfg["act_dim"], cfg["obs_dim"]
    assert len(LATENT_MEAN) == a
    nodes, inits = batch_shape_nodes("obs", [a], "out_shape")
    nodes += [
        helper.make_node("Expand", ["mean_value", "out_shape"], ["mean"]),
        helper.make_node("Expand", ["log_std_value", "out_shape"], ["log_std"]),
    ]
    inits += [const("mean_value", [LATENT_MEAN]), const("log_std_value", NOISE_LOG_STD)]
    doc = f"obs [batch,{d}] -> mean [batch,{a}] = {LATENT_MEAN} per row, log_std [batch,{a}] = {NOISE_LOG_STD}, whatever obs is."
    return make_model(
        "noise_latent",
        doc,
        nodes,
        [tensor_info("obs", ["batch", d])],
        [tensor_info("mean", ["batch", a]), tensor_info("log_std", ["batch", a])],
        inits,
    )


def critic_clearance(cfg: dict) -> onnx.ModelProto:
    h, a, d = cfg["horizon"], cfg["act_dim"], cfg["obs_dim"]
    cum = np.triu(np.ones((a, a)))  # theta = q @ cum: theta_i = q_0 + ... + q_i (absolute link angles)
    nodes = [
        helper.make_node("Mul", ["chunk", "action_scale"], ["chunk_scaled"]),
        helper.make_node("Add", ["chunk_scaled", "action_offset"], ["joint_rad"]),  # [batch,H,A]
        helper.make_node("MatMul", ["joint_rad", "cumulative"], ["link_angle"]),  # [batch,H,A]
        helper.make_node("Cos", ["link_angle"], ["link_cos"]),
        helper.make_node("Sin", ["link_angle"], ["link_sin"]),
        helper.make_node("MatMul", ["link_cos", "link_lengths"], ["tool_x"]),  # [batch,H]
        helper.make_node("MatMul", ["link_sin", "link_lengths"], ["tool_y"]),
        helper.make_node("Sub", ["tool_x", "obstacle_x"], ["dx"]),
        helper.make_node("Sub", ["tool_y", "obstacle_y"], ["dy"]),
        helper.make_node("Mul", ["dx", "dx"], ["dx2"]),
        helper.make_node("Mul", ["dy", "dy"], ["dy2"]),
        helper.make_node("Add", ["dx2", "dy2"], ["dist2"]),
        helper.make_node("Sqrt", ["dist2"], ["dist"]),  # [batch,H]
        helper.make_node("ReduceMean", ["dist"], ["q"], axes=[1], keepdims=0),  # [batch]
    ]
    inits = [
        const("action_scale", cfg["scale"]),
        const("action_offset", cfg["offset"]),
        const("cumulative", cum),
        const("link_lengths", cfg["links"]),
        const("obstacle_x", cfg["obstacle"][0]),
        const("obstacle_y", cfg["obstacle"][1]),
    ]
    doc = (
        f"obs [batch,{d}] (unused), chunk [batch,{h},{a}] (normalized actions) -> q [batch] = mean over the {h} actions "
        f"of |tool_xy(chunk * scale + offset) - obstacle_center| in m (planar forward kinematics, links {cfg['links'].tolist()}, "
        f"obstacle centre {cfg['obstacle'].tolist()})."
    )
    return make_model(
        "critic_clearance",
        doc,
        nodes,
        [tensor_info("obs", ["batch", d]), tensor_info("chunk", ["batch", h, a])],
        [tensor_info("q", ["batch"])],
        inits,
    )


def edit_shift(cfg: dict) -> onnx.ModelProto:
    h, a, d = cfg["horizon"], cfg["act_dim"], cfg["obs_dim"]
    shift = np.zeros(a)
    shift[SHIFT_JOINT] = SHIFT_RAD
    nodes = [
        helper.make_node("Shape", ["chunk"], ["out_shape"]),
        helper.make_node("Expand", ["delta_value", "out_shape"], ["delta"]),
    ]
    doc = (
        f"obs [batch,{d}] (unused), chunk [batch,{h},{a}] -> delta [batch,{h},{a}] = {shift.tolist()} at every action, "
        "whatever the inputs are."
    )
    return make_model(
        "edit_shift",
        doc,
        nodes,
        [tensor_info("obs", ["batch", d]), tensor_info("chunk", ["batch", h, a])],
        [tensor_info("delta", ["batch", h, a])],
        [const("delta_value", shift)],
    )


def residual_inputs(a: int) -> list:
    return [tensor_info("state", ["batch", a]), tensor_info("action", ["batch", a])]


def residual_constant(cfg: dict, name: str, value: np.ndarray, what: str) -> onnx.ModelProto:
    a = cfg["act_dim"]
    nodes = [
        helper.make_node("Shape", ["state"], ["out_shape"]),
        helper.make_node("Expand", ["residual_value", "out_shape"], ["residual"]),
    ]
    doc = f"state [batch,{a}], action [batch,{a}] -> residual [batch,{a}] = {what}, whatever the inputs are."
    return make_model(name, doc, nodes, residual_inputs(a), [tensor_info("residual", ["batch", a])],
                      [const("residual_value", value)])


def residual_huge(cfg: dict) -> onnx.ModelProto:
    value = HUGE * np.asarray(HUGE_SIGN)
    return residual_constant(cfg, "residual_huge", value, str(value.tolist()))


def residual_nan(cfg: dict) -> onnx.ModelProto:
    return residual_constant(cfg, "residual_nan", np.full(cfg["act_dim"], np.nan), "NaN everywhere")


def residual_zero(cfg: dict) -> onnx.ModelProto:
    a = cfg["act_dim"]
    nodes = [
        helper.make_node("Add", ["state", "action"], ["sum"]),
        helper.make_node("Mul", ["sum", "zero"], ["residual"]),
    ]
    doc = f"state [batch,{a}], action [batch,{a}] -> residual [batch,{a}] = 0 * (state + action)."
    return make_model("residual_zero", doc, nodes, residual_inputs(a), [tensor_info("residual", ["batch", a])],
                      [const("zero", 0.0)])


def residual_pull(cfg: dict) -> onnx.ModelProto:
    a = cfg["act_dim"]
    nodes = [
        helper.make_node("Sub", ["action", "state"], ["diff"]),
        helper.make_node("Mul", ["diff", "gain"], ["residual"]),
    ]
    doc = f"state [batch,{a}], action [batch,{a}] -> residual [batch,{a}] = {PULL_GAIN} * (action - state)."
    return make_model("residual_pull", doc, nodes, residual_inputs(a), [tensor_info("residual", ["batch", a])],
                      [const("gain", PULL_GAIN)])


# ---------------------------------------------------------------------------------------------------- references


def ref_critic(cfg: dict, obs: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Float64 numpy reference of critic-clearance, written out joint by joint (not the graph's MatMul form)."""
    q = chunk.astype(np.float64) * cfg["scale"] + cfg["offset"]
    q1, q2, q3 = q[..., 0], q[..., 1], q[..., 2]
    l1, l2, l3 = cfg["links"]
    x = l1 * np.cos(q1) + l2 * np.cos(q1 + q2) + l3 * np.cos(q1 + q2 + q3)
    y = l1 * np.sin(q1) + l2 * np.sin(q1 + q2) + l3 * np.sin(q1 + q2 + q3)
    cx, cy = cfg["obstacle"]
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2).mean(axis=1)


def specs(cfg: dict) -> list[dict]:
    """Each test model: file, builder, how to draw its inputs, numpy reference, and whether it must match exactly."""
    h, a, d = cfg["horizon"], cfg["act_dim"], cfg["obs_dim"]

    def obs_in(rng, b):
        return {"obs": rng.standard_normal((b, d)).astype(F32)}

    def obs_chunk_in(rng, b):
        return {"obs": rng.standard_normal((b, d)).astype(F32), "chunk": rng.uniform(-1.0, 1.0, (b, h, a)).astype(F32)}

    def res_in(rng, b):
        return {"state": rng.uniform(-2.0, 2.0, (b, a)).astype(F32), "action": rng.uniform(-2.0, 2.0, (b, a)).astype(F32)}

    def full(b, shape, value):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (b, *shape))

    shift = np.zeros(a)
    shift[SHIFT_JOINT] = SHIFT_RAD
    return [
        dict(file="noise-constant.onnx", build=noise_constant, inputs=obs_in, exact=True, values_free=True,
             ref=lambda x: {"mean": full(len(x["obs"]), (h, a), NOISE_MEAN),
                            "log_std": full(len(x["obs"]), (h, a), NOISE_LOG_STD)}),
        dict(file="noise-latent.onnx", build=noise_latent, inputs=obs_in, exact=True, values_free=True,
             ref=lambda x: {"mean": full(len(x["obs"]), (a,), LATENT_MEAN),
                            "log_std": full(len(x["obs"]), (a,), NOISE_LOG_STD)}),
        dict(file="critic-clearance.onnx", build=critic_clearance, inputs=obs_chunk_in, exact=False, values_free=False,
             ref=lambda x: {"q": ref_critic(cfg, x["obs"], x["chunk"])}),
        dict(file="edit-shift.onnx", build=edit_shift, inputs=obs_chunk_in, exact=True, values_free=True,
             ref=lambda x: {"delta": full(len(x["chunk"]), (h, a), shift)}),
        dict(file="residual-huge.onnx", build=residual_huge, inputs=res_in, exact=True, values_free=True,
             ref=lambda x: {"residual": full(len(x["state"]), (a,), HUGE * np.asarray(HUGE_SIGN))}),
        dict(file="residual-nan.onnx", build=residual_nan, inputs=res_in, exact=True, values_free=True,
             ref=lambda x: {"residual": full(len(x["state"]), (a,), np.nan)}),
        dict(file="residual-zero.onnx", build=residual_zero, inputs=res_in, exact=True, values_free=False,
             ref=lambda x: {"residual": np.zeros((len(x["state"]), a))}),
        dict(file="residual-pull.onnx", build=residual_pull, inputs=res_in, exact=False, values_free=False,
             ref=lambda x: {"residual": PULL_GAIN * (x["action"].astype(np.float64) - x["state"].astype(np.float64))}),
    ]


# ---------------------------------------------------------------------------------------------------- checks


def declared_dims(vi: onnx.ValueInfoProto) -> list:
    return [dd.dim_param or dd.dim_value for dd in vi.type.tensor_type.shape.dim]


def check(spec: dict, model: onnx.ModelProto, data: bytes) -> list[str]:
    """onnx.checker, then onnxruntime against the numpy reference at each batch size. Returns report lines."""
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for vi in inferred.graph.output:
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT, f"{vi.name} is not float32"
        assert declared_dims(vi)[0] == "batch", f"{vi.name}: batch axis is not symbolic"

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    names_in = {i.name for i in model.graph.input}
    assert {i.name for i in sess.get_inputs()} == names_in, "onnxruntime lost an input"
    lines = []
    rng = np.random.default_rng(SEED)
    for b in BATCHES:
        max_err = 0.0
        feeds_list = [spec["inputs"](rng, b)]
        if spec["values_free"]:
            # The constant models must not look at the values at all: non-finite and huge inputs change nothing.
            wild = {k: v.copy() for k, v in spec["inputs"](rng, b).items()}
            for v in wild.values():
                flat = v.reshape(-1)
                flat[0::3] = np.nan
                flat[1::3] = np.inf
                flat[2::3] = -3e38
            feeds_list.append(wild)
        for feeds in feeds_list:
            got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
            ref = spec["ref"](feeds)
            assert set(got) == set(ref), f"outputs {sorted(got)} != {sorted(ref)}"
            for name, r in ref.items():
                g = got[name]
                assert g.dtype == np.float32, f"{name}: dtype {g.dtype}"
                assert g.shape == r.shape, f"{name}: shape {g.shape} != {r.shape}"
                if spec["exact"]:
                    assert np.array_equal(g, r.astype(F32), equal_nan=True), f"{name}: not exactly the reference"
                    if np.isnan(r).all():
                        assert np.isnan(g).all(), f"{name}: not all NaN"
                else:
                    err = float(np.max(np.abs(g.astype(np.float64) - r)))
                    assert err <= ATOL, f"{name}: max |ort - ref| = {err:.3g} > {ATOL}"
                    max_err = max(max_err, err)
        lines.append(f"  batch {b}: " + ", ".join(f"{n} {tuple(got[n].shape)}" for n in got)
                     + (f", max |ort - ref| {max_err:.2e}" if not spec["exact"] else ", bit-exact")
                     + (" (also with NaN/inf/huge inputs)" if spec["values_free"] else ""))
    return lines


# ---------------------------------------------------------------------------------------------------- model card


def signature(model: onnx.ModelProto) -> str:
    def fmt(vs):
        return ", ".join(f"`{v.name}` [{', '.join(str(x) for x in declared_dims(v))}] f32" for v in vs)

    return f"{fmt(model.graph.input)} -> {fmt(model.graph.output)}"


def card(cfg: dict, built: list[tuple[dict, onnx.ModelProto, bytes]]) -> str:
    h, a = cfg["horizon"], cfg["act_dim"]
    scale = ", ".join(f"{v:.9g}" for v in cfg["scale"])
    offset = ", ".join(f"{v:.9g}" for v in cfg["offset"])
    links = ", ".join(f"{v:g}" for v in cfg["links"])
    obstacle = ", ".join(f"{v:g}" for v in cfg["obstacle"])
    joints = ", ".join(cfg["joints"])
    definitions = {
        "noise-constant.onnx": f"`mean` = {NOISE_MEAN} and `log_std` = {NOISE_LOG_STD} at every element, whatever `obs` "
        "holds (only its batch size is read: Shape -> Expand).",
        "noise-latent.onnx": f"`mean` = [{', '.join(str(v) for v in LATENT_MEAN)}] in every row, `log_std` = "
        f"{NOISE_LOG_STD} everywhere, whatever `obs` holds. A per-joint latent: the runtime tiles it over the {h} actions.",
        "critic-clearance.onnx": f"joint_rad = chunk * scale + offset (reach-dp's [action]); q1, q2, q3 = its joints; "
        f"tool x = l1 cos(q1) + l2 cos(q1+q2) + l3 cos(q1+q2+q3), y the same with sin (l = [{links}] m); "
        f"`q` = mean over the {h} actions of sqrt((x - {cfg['obstacle'][0]:g})^2 + (y - {cfg['obstacle'][1]:g})^2), "
        "the tool point's distance from the obstacle centre in m (higher = more clearance; the centre, not the disc's "
        "edge: the disc's radius is not subtracted). `obs` is not used.",
        "edit-shift.onnx": f"`delta` = +{SHIFT_RAD} for joint {SHIFT_JOINT} ({cfg['joints'][SHIFT_JOINT]}) at every action, 0 "
        "for the other joints, whatever the inputs hold (only `chunk`'s shape is read).",
        "residual-huge.onnx": f"`residual` = [{', '.join(f'{HUGE * s:+.0e}' for s in HUGE_SIGN)}] in every row, whatever "
        "the inputs hold.",
        "residual-nan.onnx": "`residual` = NaN everywhere (float32 quiet NaN 0x7fc00000), whatever the inputs hold.",
        "residual-zero.onnx": "`residual` = 0 * (state + action): zero for finite inputs (-0.0 where state + action < 0; "
        "NaN where it is not finite).",
        "residual-pull.onnx": f"`residual` = {PULL_GAIN} * (action - state).",
    }
    rows = []
    for spec, model, data in built:
        f = spec["file"]
        rows.append(
            f"### `{f}`\n\n- {signature(model)}\n- {definitions[f]}\n"
            f"- {len(data)} bytes, sha256 `{hashlib.sha256(data).hexdigest()}`\n"
        )
    return f"""# steering-test: TEST MODELS

**TEST MODELS with hand-set weights, not trained, for plumbing tests only.** They do nothing useful on a robot:
each graph has a closed-form output (a constant, NaN, +-1e6, a distance) so that tests of the inference-time
steering stages (noise, critic, edit, residual) around the `{cfg['name']}` base policy can assert exact values.
Never deploy them. Every file carries the ONNX metadata `test_model = "true"`, `trained = "false"`.

Regenerate (and re-check) with:

```sh
python3 -m venv .venv-tools-lite
.venv-tools-lite/bin/pip install onnx==1.23.2 numpy==2.4.6 onnxruntime==1.31.1
.venv-tools-lite/bin/python models/tools/steering_test_models.py
```

The output is byte-identical on every run (fixed producer `{PRODUCER}`, version {PRODUCER_VERSION}, no
timestamps).
This card is written by the same script.

## Common

- ONNX opset {OPSET}, ir_version {IR_VERSION}, float32 everywhere, batch axis dynamic (`batch`); made with
  `onnx.helper` only (no torch).
- Sizes from `models/{cfg['name']}/manifest.toml`: observation {cfg['obs_dim']} floats, horizon H = {h}, A = {a}
  joints [{joints}]; chunks are the policy's normalized actions, joint_rad = x * scale + offset with
  scale [{scale}], offset [{offset}].
- Arm and obstacle from `firmware-configs/sim-arm.toml`: link lengths [{links}] m, obstacle centre [{obstacle}] m.
- Checks run by the script: `onnx.checker.check_model(full_check=True)`, strict shape inference, then onnxruntime
  (CPU) at batch {' and '.join(str(b) for b in BATCHES)} on random inputs (seed {SEED}) against a numpy reference of
  the definition below: to {ATOL:g} for critic-clearance and residual-pull, bit for bit for the others; the
  constant models also with NaN / inf / huge inputs.

## Files

{chr(10).join(rows)}"""


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output folder (default models/steering-test)")
    args = ap.parse_args()

    cfg = load_config()
    args.out.mkdir(parents=True, exist_ok=True)
    built = []
    for spec in specs(cfg):
        model = spec["build"](cfg)
        data = model.SerializeToString(deterministic=True)
        lines = check(spec, model, data)
        (args.out / spec["file"]).write_bytes(data)
        built.append((spec, model, data))
        print(f"{spec['file']}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}, checker ok")
        for line in lines:
            print(line)
    (args.out / "MODEL_CARD.md").write_text(card(cfg, built))
    print(f"wrote {len(built)} models and MODEL_CARD.md to {args.out}")


if __name__ == "__main__":
    main()
