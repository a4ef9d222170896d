"""RTP media, sans-IO: packets, G.711, the prompt sender, received keys (RFC 4733 and in-band), RTCP."""

from voip_sos.rtp.dtmf import TelephoneEventReceiver
from voip_sos.rtp.events import (
    DtmfReceived,
    FirstPacketReceived,
    MediaTimedOut,
    PromptPlayed,
    RemoteAddressLatched,
    RtpEvent,
)
from voip_sos.rtp.g711 import CODECS, STATIC_PAYLOAD_TYPES, Codec, decode, encode
from voip_sos.rtp.inband import InbandDtmfDetector
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.receiver import ReceiveStats, RtpReceiver
from voip_sos.rtp.sender import FRAME_SECONDS, PTIME_MS, RtpSender
from voip_sos.rtp.session import MediaSession

__all__ = [
    "CODECS",
    "FRAME_SECONDS",
    "PTIME_MS",
    "STATIC_PAYLOAD_TYPES",
    "Codec",
    "DtmfReceived",
    "FirstPacketReceived",
    "InbandDtmfDetector",
    "MediaSession",
    "MediaTimedOut",
    "Prompt",
    "PromptPlayed",
    "ReceiveStats",
    "RemoteAddressLatched",
    "RtpEvent",
    "RtpPacket",
    "RtpReceiver",
    "RtpSender",
    "TelephoneEventReceiver",
    "decode",
    "encode",
]
