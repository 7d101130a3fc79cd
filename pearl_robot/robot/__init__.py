"""What the robot is, independent of who simulates or drives it: the joint description read
from the MJCF without MuJoCo (``description``), the randomization spec of its physical
parameters (``randomization``) and the record of one control tick (``transition``). Numpy and
the standard library only, so the twin, the task families, the runtime, the dataset log, the
hardware bridge, the exporter and the ROS nodes all import it without pulling in MuJoCo, torch
or rclpy."""
