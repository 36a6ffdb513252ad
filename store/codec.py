"""Codecs: turn values into canonical bytes and back, choosing the encoding by type.

(Interface; implementation in progress.)
"""
