"""The CyTube bot: frame codec, protocol, events, connection, event router, chat commands,
rooms, their retry handlers, and the local CyTube-compatible server used by the demo and tests.
"""
