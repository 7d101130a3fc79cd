"""Checkpoint -> model bundle (workstation side; imports torch).

``exporter.export_checkpoint`` writes the bundle the robot's ``pearl_robot.runtime`` loads:
``actor.onnx``, ``encoder.onnx``, ``contract.json``, ``golden.npz``, parity-checked against
the torch model and written atomically. ``graphs`` holds the export wrappers, ``testing`` small
real bundles for tests, ``cli`` the ``pearl-robot export`` subcommand.
"""
