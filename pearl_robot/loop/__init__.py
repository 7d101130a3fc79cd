"""The sim-to-real loop as one command (``pearl-robot demo``): :mod:`.mission` runs the
stages (evening on the serial robot, a night of collection, the morning's retrain, the hot-swap
with its quality canary, the held-out tasks again) and :mod:`.report` writes what people look
at. ROS enters only through child processes and ``pearl_robot.ros.loop_probe``."""
