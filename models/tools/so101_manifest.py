"""Writes models/so101-pick/manifest.toml from the normalization.json that so101_export.py writes beside the
ONNX file (manifests.py's rule: a manifest is generated, never typed, so a retrained model cannot ship with a
stale one). Standard library only.

    python models/tools/so101_manifest.py
"""

from __future__ import annotations

import json

from manifests import DP_IO, MODELS, diffusion_sampler, fmt_list, header, write

NAME = "so101-pick"


def body(norm: dict) -> str:
    obs, act, chunk = norm["obs"], norm["action"], norm["chunk"]
    off, sc = obs["offset"], obs["scale"]
    n = len(act["joints"])
    assert len(off) == 2 * n + 3 and obs["layout"][0].startswith("joint_pos(t-1)"), obs["layout"]
    return f"""# The graph's `obs` input: [joint_pos(t-1), joint_pos(t), cube], each value (raw - offset) * scale with the
# statistics of the demonstrations; joint_pos history 2 (one frame per policy step), oldest first, filled with
# the first frame at reset; cube: the cube's position (m, world frame) from the node's `sensor/cube`.
[[observation.terms]]
field = "joint_pos"
history = 2
offset = {fmt_list(off[:2 * n])}
scale = {fmt_list(sc[:2 * n])}

[[observation.terms]]
field = "cube"
size = 3
offset = {fmt_list(off[2 * n:])}
scale = {fmt_list(sc[2 * n:])}

# Joint position targets, gripper included: joint_rad = x * scale + offset (min-max of the demonstrations
# with a 5 % margin).
[action]
joints = {json.dumps(act["joints"])}
horizon = {chunk["horizon"]}
dt_s = {chunk["dt_s"]!r}
scale = {fmt_list(act["scale"])}
offset = {fmt_list(act["offset"])}
"""


def main() -> None:
    d = MODELS / NAME
    norm = json.loads((d / "normalization.json").read_text())
    desc = ("Diffusion policy (noise prediction, DDIM 10 steps) for the SO-101 pick task in MuJoCo: grasp the "
            "cube and lift it.")
    head = header(NAME, "diffusion", "policy.onnx", desc).replace("manifests.py", "so101_manifest.py")
    write(d / "manifest.toml", head + DP_IO + "\n" + body(norm)
          + diffusion_sampler())


if __name__ == "__main__":
    main()
