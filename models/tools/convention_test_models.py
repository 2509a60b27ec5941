"""Generate the TEST models of models/conventions-test/: tiny direct policies whose manifests each state one
deploy convention (history layout, per-element clipping, gait phase and constants, the fed-back action), for
the conformance test tests/conventions.rs and its independent Python reference tests/conventions/reference.py.

    python models/tools/convention_test_models.py [--out DIR]

These are NOT trained models. Each graph is one fixed linear layer, actions = obs @ W^T + b (Gemm), with W and
b drawn from a seeded generator and written beside it (weights.json), so the reference can check that the
graph received the tensor it computed. Needs only onnx, numpy and onnxruntime (no torch). Every file is opset
17, ir_version 8, float32, batch 1, metadata test_model = "true"; checked with onnx.checker and run with
onnxruntime against numpy (1e-5). The output is byte-identical on every run. Also writes MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "models" / "conventions-test"
OPSET = 17
IR_VERSION = 8
PRODUCER = "coxswain models/tools/convention_test_models.py"
PRODUCER_VERSION = "1"

HEADER = """format_version = 1
# TEST MODEL (models/tools/convention_test_models.py): one fixed linear layer with seeded weights, not trained.
# It states one deploy convention for tests/conventions.rs; never deploy it.

[model]
kind = "direct"
onnx = "policy.onnx"
name = "{name}"
description = "TEST MODEL: {what}"

[io]
observation = "obs"
output = "actions"
"""

ACTION = """
[action]
joints = ["a", "b", "c"]
horizon = 1
dt_s = 0.02
scale = 0.5
{clip}"""

# name -> (what it states, observation part of the manifest, action clip line, output gain)
CASES = {
    "frame-major": (
        "a three-frame history laid out frame-major (whole frames, oldest first)",
        """
[observation]
history_layout = "frame_major"

[[observation.terms]]
field = "joint_pos"
history = 3
offset = [0.1, -0.2, 0.3]
scale = 2.0

[[observation.terms]]
field = "joint_vel"
history = 3
scale = 0.05

[[observation.terms]]
field = "command"
size = 3
history = 3
scale = [2.0, 2.0, 0.25]
""",
        "",
        1.0,
    ),
    "term-major": (
        "the same history laid out term-major (every frame of a term, then the next term)",
        """
[[observation.terms]]
field = "joint_pos"
history = 3
offset = [0.1, -0.2, 0.3]
scale = 2.0

[[observation.terms]]
field = "joint_vel"
history = 2
scale = 0.05

[[observation.terms]]
field = "command"
size = 3
scale = [2.0, 2.0, 0.25]
""",
        "",
        1.0,
    ),
    "clip": (
        "asymmetric per-element clips, before and after offset and scale",
        """
[[observation.terms]]
field = "command"
size = 3
scale = [2.0, 2.0, 0.25]
clip_low = [-1.0, -0.5, -2.0]
clip_high = [1.0, 0.5, 2.0]
clip_stage = "raw"

[[observation.terms]]
field = "joint_vel"
scale = 0.05
clip = [-0.3, 0.8]

[[observation.terms]]
field = "joint_pos"
offset = 0.2
scale = 2.0
clip_high = [0.5, 1.0, 1.5]
""",
        "",
        1.0,
    ),
    "phase": (
        "a gait phase (sin/cos) that resets while the command is near zero, a free-running phase fraction, "
        "and constant gait parameters",
        """
[[observation.terms]]
field = "phase"
period_s = 0.8
step_s = 0.02
reset_field = "command"
reset_below = 0.1

[[observation.terms]]
field = "phase"
period_s = 0.5
step_s = 0.02
encoding = "fraction"
history = 2

[[observation.terms]]
field = "constant"
values = [0.5, 1.2]
scale = [2.0, 1.0]

[[observation.terms]]
field = "command"
size = 3
""",
        "",
        1.0,
    ),
    "last-action-clipped": (
        "the clipped action fed back as last_action",
        """
[observation]
last_action = "clipped"

[[observation.terms]]
field = "joint_pos"

[[observation.terms]]
field = "last_action"
""",
        "clip = [-1.0, 1.0]\n",
        4.0,
    ),
    "command": (
        "a velocity command from outside that times out and decays to zero, limited per axis",
        """
[[observation.terms]]
field = "velocity_command"
size = 3
scale = [2.0, 2.0, 0.25]
timeout_s = 0.5
decay_s = 1.0
clip_low = [-0.5, -0.3, -1.0]
clip_high = [1.0, 0.3, 1.0]
clip_stage = "raw"

[[observation.terms]]
field = "joint_pos"
""",
        "",
        1.0,
    ),
    "pipeline": (
        "a two-graph pipeline: the encoder's input built from two terms, the head's from the encoder's output, "
        "a term and a command, frame-major",
        """
[[observation.terms]]
field = "image"
size = 8

[[observation.terms]]
field = "joint_pos"
scale = 2.0

[[observation.terms]]
field = "command"
size = 3
scale = [2.0, 2.0, 0.25]
""",
        "",
        1.0,
    ),
    "wheel": (
        "a velocity joint (a wheel) beside two position joints of the simulated arm",
        """
[[observation.terms]]
field = "joint_pos"

[[observation.terms]]
field = "joint_vel"
scale = 0.1
""",
        'modes = ["position", "position", "velocity"]\n',
        1.0,
    ),
    "effort": (
        "an effort joint (a torque-controlled wrist) beside two position joints of the simulated arm",
        """
[[observation.terms]]
field = "joint_pos"

[[observation.terms]]
field = "joint_vel"
scale = 0.1
""",
        'modes = ["position", "position", "effort"]\n',
        1.0,
    ),
    "gains": (
        "the policy's own joint gains for three of the SO-101's six joints (named out of order)",
        """
[[observation.terms]]
field = "joint_pos"
""",
        "kp = [25.0, 18.0, 9.0]\nkd = 0.5\n",
        1.0,
    ),
    "last-action-raw": (
        "the raw (unclipped) action fed back as last_action",
        """
[[observation.terms]]
field = "joint_pos"

[[observation.terms]]
field = "last_action"
""",
        "clip = [-1.0, 1.0]\n",
        4.0,
    ),
}


ENCODER_WIDTH = 4


def obs_width(name: str, parts: list[str] | None = None) -> int:
    """The width of the head's observation (or of `parts`), as the manifest implies it (checked again by
    coxswain at load)."""
    import tomllib

    m = tomllib.loads(manifest_text(name))
    if parts is None:
        parts = m["io"].get("observation_parts")
    width = 0
    for t in m["observation"]["terms"]:
        if parts is not None and t.get("name", t["field"]) not in parts:
            continue
        f = t["field"]
        if f in ("joint_pos", "joint_vel", "joint_effort", "last_action"):
            size = 3
        elif f == "constant":
            size = len(t["values"])
        elif f == "phase":
            size = 1 if t.get("encoding") == "fraction" else 2
        else:
            size = t["size"]
        width += size * t.get("history", 1)
    if parts is not None:
        width += ENCODER_WIDTH * sum(1 for p in parts if p.startswith("@"))
    return width


PIPELINE_IO = """
[io]
observation = "obs"
observation_parts = ["@vision", "joint_pos", "command"]
output = "actions"

[observation]
history_layout = "frame_major"
"""

PIPELINE_ENCODER = """
[[encoders]]
name = "vision"
onnx = "encoder.onnx"
input = "x"
parts = ["image", "joint_pos"]
output = "features"
"""


def manifest_text(name: str) -> str:
    what, obs, clip, _ = CASES[name]
    text = HEADER.format(name=f"conventions-test-{name}", what=what) + obs + ACTION.format(clip=clip)
    if name == "pipeline":
        text = text.replace('[io]\nobservation = "obs"\noutput = "actions"\n', PIPELINE_IO)
        text = text.replace("size = 8\n", "size = 8\nhistory = 2\n").replace('field = "joint_pos"\n', 'field = "joint_pos"\nhistory = 2\n')
        text = text.replace("size = 3\nscale", "size = 3\nhistory = 2\nscale") + PIPELINE_ENCODER
    if name in ("wheel", "effort"):
        # A chunk of 8 actions (a one-action policy would leave the executor nothing to run between ticks).
        text = text.replace("horizon = 1\n", "horizon = 8\n")
    if name in ("command", "wheel", "effort"):
        # Joints of firmware-configs/sim-arm.toml (the test adds a velocity_command sensor to it).
        text = text.replace('joints = ["a", "b", "c"]', 'joints = ["shoulder", "elbow", "wrist"]')
    if name == "gains":
        # Joints of firmware-configs/so101.toml, not in its order.
        text = text.replace('joints = ["a", "b", "c"]', 'joints = ["elbow_flex", "shoulder_pan", "wrist_roll"]')
    return text


def graph(name: str, w: np.ndarray, b: np.ndarray, x: str = "obs", y: str = "actions") -> onnx.ModelProto:
    n = w.shape[1]
    node = helper.make_node("Gemm", [x, "W", "b"], [y], transB=1)
    g = helper.make_graph(
        [node],
        name.replace("-", "_"),
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, w.shape[0]])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"test_model": "true", "trained": "false"})
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(CASES):
        gain = CASES[name][3]
        n = obs_width(name)
        # The two last-action models share their weights: they differ only in what they feed back.
        rng = np.random.default_rng(2000 if name.startswith("last-action") else 1000 + sum(name.encode()))
        horizon = 8 if name in ("wheel", "effort") else 1
        w = gain * rng.uniform(-0.5, 0.5, size=(3 * horizon, n))
        if name.startswith("last-action"):
            # The fed-back action's weights stay small, so that the raw feedback loop stays bounded.
            w[:, 3:6] *= 0.05
        w = w.astype(np.float32)
        b = (0.1 * rng.uniform(-1.0, 1.0, size=3 * horizon)).astype(np.float32)
        d = args.out / name
        d.mkdir(exist_ok=True)
        model = graph(name, w, b)
        (d / "policy.onnx").write_bytes(model.SerializeToString())
        (d / "manifest.toml").write_text(manifest_text(name))
        weights = {"W": [[float(v) for v in row] for row in w], "b": [float(v) for v in b]}
        if name == "pipeline":
            ne = obs_width(name, ["image", "joint_pos"])
            # Small weights keep the features near 1, where float32 and the float64 reference agree to 1e-7.
            we = rng.uniform(-0.2, 0.2, size=(ENCODER_WIDTH, ne)).astype(np.float32)
            be = (0.1 * rng.uniform(-1.0, 1.0, size=ENCODER_WIDTH)).astype(np.float32)
            (d / "encoder.onnx").write_bytes(graph(name + "-encoder", we, be, "x", "features").SerializeToString())
            weights["encoder"] = {"W": [[float(v) for v in row] for row in we], "b": [float(v) for v in be]}
        (d / "weights.json").write_text(json.dumps(weights, indent=1) + "\n")
        sess = ort.InferenceSession(str(d / "policy.onnx"), providers=["CPUExecutionProvider"])
        x = rng.normal(size=(1, n)).astype(np.float32)
        got = sess.run(None, {"obs": x})[0]
        err = float(np.abs(got - (x @ w.T + b)).max())
        assert err < 1e-5, (name, err)
        rows.append(f"| `{name}/` | {CASES[name][0]} | obs [1, {n}] -> actions [1, {3 * horizon}] |")
    card = [
        "# conventions-test: TEST MODELS",
        "",
        "**TEST MODELS with seeded weights, not trained, for the deploy-convention conformance test only.** Each is",
        "one linear layer (`actions = obs @ W^T + b`, the weights also in `weights.json`) behind a manifest that",
        "states one convention. `tests/conventions.rs` runs each through coxswain and compares the graph input it",
        "assembled with `tests/conventions/reference.py`, which builds it from the convention's definition.",
        "Never deploy them. Every file carries the ONNX metadata `test_model = \"true\"`, `trained = \"false\"`.",
        "",
        "Regenerate with `python models/tools/convention_test_models.py` (onnx, numpy, onnxruntime); the output",
        "is byte-identical on every run. This card is written by the same script.",
        "",
        "| folder | states | shapes |",
        "|---|---|---|",
        *rows,
        "",
    ]
    (args.out / "MODEL_CARD.md").write_text("\n".join(card))
    print(f"wrote {len(CASES)} test models to {args.out}")


if __name__ == "__main__":
    main()
