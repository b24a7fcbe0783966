"""FIML Stream's contracts: topic records, WebSocket messages, codecs, symbols and topics.

This package imports nothing else from the project, so every other part can depend on it.
"""
