"""The serial link to the robot's microcontroller (robot side: no torch, no MuJoCo, no rclpy).

- ``protocol``   frames and messages of protocol v1 (docs/serial-protocol.md), the splitter
- ``errors``     one typed error per way a frame or the link fails
- ``transport``  pyserial ``serial_for_url`` (device paths, ptys, ``loop://``, ``socket://``)
- ``bridge``     ``SerialBridge``: handshake, state in, commands out, watchdogs, e-stop,
                 reconnect, link statistics; the ROS bridge node adapts it
- ``emulator``   the device side (firmware emulator) driving a plant, with fault injection
- ``emulate_cli`` ``pearl-robot emulate``: the MuJoCo twin behind the protocol on a pty
- ``examples``   the worked example frames quoted in docs/serial-protocol.md

Nothing is imported here, so importing one module does not pull in the others.
"""
