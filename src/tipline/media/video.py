"""Safe video decoding with PyAV: metadata checks before decoding, limits while decoding, and
every failure a typed one-line error.

Two ways to sample frames for vPDQ (see ``tipline.signals.vpdq``):

* ``reference``: exactly what the ``vpdq`` package (and so python-threatexchange and HMA) does.
  Every frame is decoded in order; frame ``n`` (counted in decoder output order from 0) is kept
  when ``n % int(seconds_per_hash * fps) == 0``, where fps is the stream's average frame rate
  (falling back to its base rate); it is converted to full-resolution RGB24 with swscale's
  area filter and BT.601 defaults, and its timestamp is ``float32(n) / float32(fps)``. vpdq only
  drains the decoder at the end of the file when the video is stream 0; we copy that too.
* ``fast``: only keyframes are decoded (packets of other frames are never handed to the
  decoder), at most one per ``seconds_per_hash``, and PDQ works on the luma plane straight from
  the decoder (box-reduced, see ``LumaPlane``): no colour conversion. Timestamps are the frames'
  presentation times. About 10-20x less work than decoding every frame, because H.264 and
  friends can only decode a non-key frame after every frame it depends on.

The input is untrusted. We open the file ourselves and hand PyAV a file object (so a crafted
name is never read as an FFmpeg protocol such as ``concat:`` or ``http:``), pin the demuxer to
the container the magic bytes named (no HLS playlists or other formats that open further
files), refuse absurd dimensions, durations and frame counts from the stream metadata before
any frame is decoded, tell the decoder itself the pixel limit (a mid-stream resolution change
cannot exceed it), and stop decoding at the duration, frame and time limits.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from tipline.config import Limits
from tipline.errors import (
    CorruptMediaError,
    TooManyPixelsError,
    UnsupportedMediaError,
    VideoLimitError,
)
from tipline.media.decode import FAST_MIN_SIDE, LumaPlane
from tipline.media.sniff import AVI, MP4, QUICKTIME, WEBM, MediaType

if TYPE_CHECKING:
    import av.container
    import av.stream
    import av.video.frame
    import av.video.stream

VideoMode = Literal["fast", "reference"]
VideoSource = str | os.PathLike[str] | bytes

#: The demuxer for each container kind that ``sniff`` recognises.
_DEMUXERS: dict[MediaType, str] = {MP4: "mov", QUICKTIME: "mov", WEBM: "matroska", AVI: "avi"}

#: 8-bit pixel formats whose first plane is the luma (Y) plane we can hash directly.
_LUMA_FIRST = {
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
    "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray", "yuva420p",
}  # fmt: skip
_FULL_RANGE = {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "gray"}


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container and stream headers say (before decoding)."""

    width: int
    height: int
    #: frames per second: the stream's average rate, else its base rate; 0.0 if unknown
    fps: float
    #: seconds, from the stream or the container; None if neither says
    duration: float | None
    #: frame count from the header (or duration x fps); None if unknown
    frames: int | None
    #: True when ``frames`` is the container's own count (MP4 sample tables), not an estimate
    frames_exact: bool
    codec: str
    #: index of the video stream among all streams of the file
    stream_index: int


@dataclass(slots=True)
class VideoSample:
    """One sampled frame: full-resolution RGB (reference) or a luma plane (fast)."""

    #: decoded-frame number in reference mode; -1 in fast mode (keyframes are not counted)
    frame_number: int
    #: seconds from the start
    timestamp: float
    rgb: npt.NDArray[np.uint8] | None = None
    luma: LumaPlane | None = None
    #: luma from a limited-range (16..235) video plane: scale to 0..255 before quality
    limited_range: bool = False


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # PyAV prefixes FFmpeg's errors with "[Errno N] "; the number helps nobody.
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    text = re.sub(r": '(<none>|[A-Za-z_0-9]+\(\))'$", "", text)
    return text[:200]


@contextmanager
def open_video(
    source: VideoSource, media_type: MediaType, limits: Limits
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream, VideoInfo]]:
    """Open a video (a path or the bytes of one), check its headers against ``limits`` and yield
    ``(container, video stream, info)``. Raises typed ItemErrors with one-line messages."""
    import av
    import av.error

    demuxer = _DEMUXERS.get(media_type)
    if demuxer is None:
        raise UnsupportedMediaError(f"not a video container we decode ({media_type.mime})")
    fh: BinaryIO
    if isinstance(source, bytes | bytearray):
        fh = io.BytesIO(source)
    else:
        try:
            fh = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            from tipline.errors import UnreadableError

            raise UnreadableError(err.strerror or str(err)) from None
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                container = av.open(fh, mode="r", format=demuxer)
        except av.error.FFmpegError as err:
            raise CorruptMediaError(
                f"{media_type.mime} container could not be read: {_short(err)}"
            ) from None
        except (OSError, ValueError, MemoryError) as err:
            raise CorruptMediaError(
                f"{media_type.mime} container could not be read: {_short(err)}"
            ) from None
        try:
            stream, info = _check_streams(container, media_type, limits)
            yield container, stream, info
        finally:
            container.close()
    finally:
        fh.close()


def _check_streams(
    container: av.container.InputContainer, media_type: MediaType, limits: Limits
) -> tuple[av.video.stream.VideoStream, VideoInfo]:
    videos = list(container.streams.video)
    if not videos:
        if container.streams.audio:
            raise UnsupportedMediaError(
                f"audio-only {media_type.mime} file: no video stream to hash"
            )
        raise UnsupportedMediaError(f"{media_type.mime} file has no video stream")
    # The first video stream, as vpdq takes it (the stream index is over all streams).
    stream = min(videos, key=lambda s: s.index)
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise CorruptMediaError(f"video stream claims impossible dimensions {width}x{height}")
    if (
        width > limits.max_video_side
        or height > limits.max_video_side
        or width * height > limits.max_video_pixels
    ):
        raise TooManyPixelsError(
            f"video frames of {width}x{height} exceed the limit of {limits.max_video_pixels:,} "
            f"pixels / {limits.max_video_side:,} per side; raise --max-video-pixels to decode it"
        )
    fps = _fps(stream)
    duration = _duration(container, stream)
    if duration is not None and duration > limits.max_video_seconds:
        raise VideoLimitError(
            f"video claims {duration:,.0f} s, over --max-video-seconds "
            f"{limits.max_video_seconds:,.0f}; not decoded"
        )
    frames = int(stream.frames or 0) or None
    frames_exact = frames is not None
    if frames is None and duration is not None and fps > 0:
        frames = int(duration * fps)
    if frames is not None and frames > limits.max_video_frames:
        raise VideoLimitError(
            f"video claims {frames:,} frames, over --max-video-frames "
            f"{limits.max_video_frames:,}; not decoded"
        )
    # The decoder checks every frame size (including mid-stream changes) against this.
    ctx.options = {"max_pixels": str(limits.max_video_pixels)}
    ctx.thread_count = 1
    codec = ctx.name or "unknown"
    info = VideoInfo(width, height, fps, duration, frames, frames_exact, codec, stream.index)
    return stream, info


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.base_rate):
        if rate is not None and rate.numerator > 0 and rate.denominator > 0:
            return float(rate)
    return 0.0


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return None


def sample_frames(
    source: VideoSource,
    media_type: MediaType,
    limits: Limits,
    mode: VideoMode = "fast",
    seconds_per_hash: float = 1.0,
    info_out: list[VideoInfo] | None = None,
) -> Iterator[VideoSample]:
    """The frames to hash, in order. Raises typed ItemErrors; an error after some frames were
    yielded (a truncated or damaged stream, a limit reached) is raised after them, so callers
    can keep what was hashed. ``info_out`` (a list) receives the VideoInfo when the file opens.
    The caller enforces the decode time limit (``deadline``) around the whole iteration."""
    import av.error

    with open_video(source, media_type, limits) as (container, stream, info):
        if info_out is not None:
            info_out.append(info)
        sampler = _reference if mode == "reference" else _fast
        try:
            yield from sampler(container, stream, info, limits, seconds_per_hash)
        except av.error.FFmpegError as err:
            raise CorruptMediaError(f"video stream damaged: {_short(err)}") from None
        except MemoryError:
            raise CorruptMediaError("ran out of memory decoding the video") from None


#: Fast mode: decode forward from a keyframe to a mark at most this many sample intervals
#: away, unless nothing was sampled for FAST_MAX_GAP intervals.
FAST_MAX_FORWARD = 0.25
FAST_MAX_GAP = 4.0

#: Undecodable packets tolerated per video before giving up on it.
MAX_BAD_PACKETS = 100


class _Damage:
    """Decoding errors of one video: skipped (as far as we can) and reported once at the end."""

    def __init__(self) -> None:
        self.count = 0
        self.first = ""

    def decode(self, ctx: Any, packet: Any) -> list[av.video.frame.VideoFrame]:
        import av.error

        try:
            frames: list[av.video.frame.VideoFrame] = ctx.decode(packet)
            return frames
        except av.error.FFmpegError as err:
            self.count += 1
            self.first = self.first or _short(err)
            if self.count > MAX_BAD_PACKETS:
                raise CorruptMediaError(
                    f"video stream damaged: gave up after {MAX_BAD_PACKETS} undecodable packets "
                    f"(first: {self.first})"
                ) from None
            return []

    def check(self, packets: int, info: VideoInfo) -> None:
        """Raise (after the frames were used) if anything was damaged or missing."""
        if info.frames_exact and info.frames is not None and packets < info.frames:
            raise CorruptMediaError(
                f"truncated video: {packets:,} of the {info.frames:,} frames its header lists "
                "are present; hashed what was there"
            )
        if self.count:
            raise CorruptMediaError(
                f"video stream damaged: {self.count} packet(s) could not be decoded and were "
                f"skipped (first: {self.first})"
            )


def _over_limits(n_decoded: int, t: float, hashed: int, limits: Limits) -> str | None:
    if t > limits.max_video_seconds:
        return f"decoding stopped at --max-video-seconds {limits.max_video_seconds:,.0f}"
    if n_decoded > limits.max_video_frames:
        return f"decoding stopped at --max-video-frames {limits.max_video_frames:,}"
    if hashed >= limits.max_video_hashes:
        return f"hashing stopped at --max-video-hashes {limits.max_video_hashes:,} frames"
    return None


def _reference(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    limits: Limits,
    seconds_per_hash: float,
) -> Iterator[VideoSample]:
    if info.fps <= 0:
        raise CorruptMediaError("video frame rate is zero or unknown (vpdq refuses it too)")
    frame_mod = max(int(seconds_per_hash * info.fps), 1)
    fps32 = np.float32(info.fps)
    ctx = stream.codec_context
    n = 0
    hashed = 0

    def take(frames: list[av.video.frame.VideoFrame]) -> Iterator[VideoSample]:
        nonlocal n, hashed
        for frame in frames:
            number = n
            n += 1
            t = float(np.float32(number) / fps32)
            stop = _over_limits(n, t, hashed, limits)
            if stop:
                raise VideoLimitError(stop)
            if number % frame_mod:
                continue
            rgb = np.asarray(
                frame.to_ndarray(
                    format="rgb24",
                    interpolation="AREA",
                    src_colorspace="DEFAULT",
                    dst_colorspace="DEFAULT",
                ),
                dtype=np.uint8,
            )
            hashed += 1
            yield VideoSample(number, t, rgb=rgb)

    damage = _Damage()
    packets = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            continue
        packets += 1
        yield from take(damage.decode(ctx, packet))
    if info.stream_index == 0:
        # vpdq drains the decoder only in this case (its flush packet has stream index 0).
        yield from take(damage.decode(ctx, None))
    if packets == 0:
        raise CorruptMediaError("video stream holds no frames")
    if n == 0:
        raise CorruptMediaError(
            f"no frame of the video stream could be decoded ({damage.first or 'no output'})"
        )
    damage.check(packets, info)


def _fast(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    limits: Limits,
    seconds_per_hash: float,
) -> Iterator[VideoSample]:
    """Sample the frames reference mode would, but only those reachable cheaply.

    Reference mode samples the frames at "marks" ``k * frame_mod / fps`` seconds. From a
    keyframe we decode forward (skipping frames no other frame depends on) to the first mark at
    or after it, hash that frame, and skip every packet until the next keyframe. A keyframe
    more than FAST_MAX_FORWARD intervals before its mark is skipped unless nothing was sampled
    for FAST_MAX_GAP intervals: keyframes every second that drift against the marks cost a few
    frames each, sparse keyframes give one sample each. Every sampled frame is one reference
    mode samples too, so a fast query against a bank hashed with reference sampling (what
    partners' lists hold) compares identical frames however fast the video moves.
    """
    ctx = stream.codec_context
    tb = stream.time_base
    start = stream.start_time or 0
    fps = info.fps if info.fps > 0 else 1.0 / max(seconds_per_hash, 1e-3)
    frame_mod = max(int(seconds_per_hash * fps), 1)
    period = frame_mod / fps
    half = 0.5 / fps
    packets = 0
    hashed = 0
    damage = _Damage()
    target: float | None = None  # time of the mark being decoded towards
    done_mark = -1  # index of the last mark sampled
    last_sample = -1e18  # time of the last frame sampled
    max_forward = FAST_MAX_FORWARD * period
    max_gap = FAST_MAX_GAP * period

    def mark_at_or_after(t: float) -> int:
        return max(math.ceil((t - half) / period), done_mark + 1)

    def take(frames: list[av.video.frame.VideoFrame]) -> Iterator[VideoSample]:
        nonlocal hashed, target, done_mark, last_sample
        for frame in frames:
            if target is None:
                continue
            t = _frame_time(frame, start, tb)
            if t < target - half:
                continue
            stop = _over_limits(packets, t, hashed, limits)
            if stop:
                raise VideoLimitError(stop)
            hashed += 1
            done_mark = max(done_mark, round(target / period))
            target = None
            last_sample = t
            yield VideoSample(-1, t, **_luma_of(frame))

    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        packets += 1
        if packets > limits.max_video_frames:
            raise VideoLimitError(
                f"decoding stopped at --max-video-frames {limits.max_video_frames:,}"
            )
        t = _packet_time(packet, start, tb)
        if packet.is_keyframe:
            tk = t if t is not None else 0.0
            k = mark_at_or_after(tk)
            if k * period - tk <= max_forward or tk - last_sample >= max_gap:
                target = k * period
                ctx.flush_buffers()  # drop what the last segment left in the decoder
            else:
                target = None  # a later keyframe lands closer to a mark
                continue
        elif target is None:
            continue
        # Decode only what later frames depend on, except the frame at the mark itself.
        on_mark = t is not None and abs(t - target) < half
        ctx.skip_frame = "DEFAULT" if packet.is_keyframe or on_mark else "NONREF"
        yield from take(damage.decode(ctx, packet))
        if on_mark and target is not None:
            # The decoder holds frames back to reorder them; drain it rather than decoding
            # the frames after the mark to push this one out.
            yield from take(damage.decode(ctx, None))
            ctx.flush_buffers()
    if target is not None:
        ctx.skip_frame = "DEFAULT"
        yield from take(damage.decode(ctx, None))
    if packets == 0:
        raise CorruptMediaError("video stream holds no frames")
    if hashed == 0:
        # No keyframe flagged (intra-refresh streams, a damaged first keyframe) or none
        # decodable: sample the way reference mode does instead.
        container.seek(0)
        ctx.skip_frame = "DEFAULT"
        ctx.flush_buffers()
        yield from _reference(container, stream, info, limits, seconds_per_hash)
        return
    damage.check(packets, info)


def _packet_time(packet: Any, start: int, tb: Any) -> float | None:
    pts = packet.pts if packet.pts is not None else packet.dts
    if pts is None or tb is None:
        return None
    return max(float((pts - start) * tb), 0.0)


def _frame_time(frame: av.video.frame.VideoFrame, start: int, tb: Any) -> float:
    pts = frame.pts
    if pts is None or tb is None:
        return 0.0
    return max(float((pts - start) * tb), 0.0)


def _luma_of(frame: av.video.frame.VideoFrame) -> dict[str, Any]:
    """The luma plane of a decoded frame, box-reduced to about FAST_MIN_SIDE on the short side
    (each reduced pixel the mean of a block: what PDQ's scaled weights assume)."""
    from PIL import Image

    fmt = frame.format.name
    w, h = frame.width, frame.height
    if fmt in _LUMA_FIRST:
        plane = frame.planes[0]
        arr = np.frombuffer(memoryview(plane), dtype=np.uint8)
        arr = arr.reshape(-1, plane.line_size)[:h, :w]
        limited = fmt not in _FULL_RANGE and frame.color_range != 2  # 2: AVCOL_RANGE_JPEG
    else:
        arr = np.asarray(frame.to_ndarray(format="gray", interpolation="AREA"), dtype=np.uint8)
        limited = False
    factor = min(w, h) // FAST_MIN_SIDE
    if factor >= 2:
        im = Image.frombuffer("L", (w, h), np.ascontiguousarray(arr), "raw", "L", 0, 1)
        arr = np.asarray(im.reduce(factor), dtype=np.uint8)
    else:
        arr = np.array(arr, dtype=np.uint8)  # copy: the frame's buffer is reused
    return {"luma": LumaPlane(arr, w, h), "limited_range": limited}
