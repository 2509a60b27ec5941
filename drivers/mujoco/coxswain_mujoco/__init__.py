"""coxswain's MuJoCo hardware-in-the-loop node: a robot description's joints in a MuJoCo scene, served over Zenoh
on the same topics as a real robot's drivers.

Start reading at `physics.py` (the physics contract shared with the task and the scripted expert), then
`node.py` (the Zenoh node: pacing, topics, faults, episode queryables). `robot.py` reads the robot description,
`faults.py` parses fault text.
"""
