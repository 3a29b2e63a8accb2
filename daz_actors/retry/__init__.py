"""The retry subsystem: failure capture, dispatcher, workers, the handler registry, the retry
subtree kind, the failure log. Generic: it names no chat protocol. Imports `runtime` and
`storage` only.
"""
