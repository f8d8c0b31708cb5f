"""Sans-I/O codecs of the native remote protocols of lab and rehab treadmills.

One module per protocol (:mod:`~treadctl.protocols.biodex`, :mod:`~treadctl.protocols.woodway`,
:mod:`~treadctl.protocols.bertec`, :mod:`~treadctl.protocols.trackmaster`): bytes <-> typed
messages (frozen dataclasses), no I/O and no clock. Every problem a codec finds is a
:class:`ProtocolError`; the stream decoders never raise, they drop bytes until the stream
makes sense again and count what they dropped. What each format is built from, and what is
not confirmed, is in docs/protocols.md.
"""

from treadctl.protocols.common import ProtocolError, StreamDecoder

__all__ = ["ProtocolError", "StreamDecoder"]
