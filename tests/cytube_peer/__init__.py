"""A test peer playing a CyTube channel: a real Socket.IO v4 server in its own process.

The server is the package's local CyTube server (`daz_actors.cytube.local_server`, also what
``daz-actors demo`` runs), started with `daz_actors.cytube.local_server_process`.
`cytube_peer.fixtures` holds the ``cytube_peer`` and ``cytube_peer_factory`` pytest
fixtures that start it on a free loopback port with short test timings and drive it
through its HTTP control API.
"""
