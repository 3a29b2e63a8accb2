"""A test peer playing a CyTube channel: a real Socket.IO v4 server in its own process.

* `cytube_peer.server`: the server (python-socketio ``AsyncServer`` under uvicorn), run as
  ``python -m cytube_peer.server --port P`` from ``tests/`` or ``python
  tests/cytube_peer/server.py``; ``--help`` lists its options.
* `cytube_peer.fixtures`: the ``cytube_peer`` and ``cytube_peer_factory`` pytest fixtures
  that start it on a free loopback port and drive it through its HTTP control API.

Nothing here is imported by the server process except the server module itself.
"""
