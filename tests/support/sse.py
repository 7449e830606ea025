"""A Server-Sent-Events client for the tests: a streamed GET read by a greenlet into frames."""

import codecs
import json
import time
from dataclasses import dataclass, field

import gevent
import requests
from gevent.queue import Empty, Queue


@dataclass
class Frame:
    """One SSE block: the lines up to a blank line, and when it arrived."""

    event: str | None = None
    id: str | None = None
    retry: str | None = None
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    at: float = 0.0

    @property
    def data(self) -> str | None:
        return "\n".join(self.data_lines) if self.data_lines else None

    def json(self) -> dict:
        return json.loads(self.data)

    @property
    def is_event(self) -> bool:
        return self.data is not None

    @property
    def is_heartbeat(self) -> bool:
        return not self.is_event and "heartbeat" in self.comments


CLOSED = "<stream closed>"


def parse_line(frame: Frame, line: str) -> None:
    """Apply one non-blank line to the frame being built (the SSE field grammar)."""
    if line.startswith(":"):
        frame.comments.append(line[1:].strip())
        return
    name, _, value = line.partition(":")
    if value.startswith(" "):
        value = value[1:]
    if name == "event":
        frame.event = value
    elif name == "id":
        frame.id = value
    elif name == "data":
        frame.data_lines.append(value)
    elif name == "retry":
        frame.retry = value


class SseStream:
    """A streamed GET read by a greenlet when the server answers with a stream: frames (then
    CLOSED) land in a queue. Any other answer is read at once and kept in `response`."""

    def __init__(self, url: str, *, headers=None, params=None):
        self.session = requests.Session()
        # The read timeout bounds every socket read; heartbeats come far more often.
        self.response = self.session.get(
            url, headers=headers, params=params, stream=True, timeout=(5, 10)
        )
        self.frames: Queue = Queue()
        self.error: Exception | None = None
        self._reader = None
        if self.is_stream:
            self._reader = gevent.spawn(self._read)
        else:
            self.response.content  # noqa: B018  (read the whole error body now)

    @property
    def is_stream(self) -> bool:
        content_type = self.response.headers.get("Content-Type", "")
        return self.response.status_code == 200 and content_type.startswith("text/event-stream")

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")()
        buffer, frame = "", Frame()
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buffer += decoder.decode(chunk)
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    line = line.rstrip("\r")
                    if line:
                        parse_line(frame, line)
                    elif frame != Frame():
                        frame.at = time.monotonic()
                        self.frames.put(frame)
                        frame = Frame()
        except (requests.RequestException, OSError) as exc:
            self.error = exc
        finally:
            self.frames.put(CLOSED)

    def next(self, timeout: float):
        """The next frame or CLOSED; fails the test after `timeout` seconds."""
        try:
            return self.frames.get(timeout=max(timeout, 0.001))
        except Empty:
            raise AssertionError(f"no frame within {timeout:.2f}s") from None

    def next_event(self, timeout: float) -> Frame:
        """The next event frame (heartbeats skipped) within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next(deadline - time.monotonic())
            assert frame is not CLOSED, f"stream closed ({self.error}) while waiting for an event"
            if frame.is_event:
                return frame

    def frames_for(self, seconds: float) -> list[Frame]:
        """Every frame that arrives in the next `seconds` (the stream must stay open)."""
        deadline = time.monotonic() + seconds
        frames = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = self.frames.get(timeout=remaining)
            except Empty:
                break
            assert frame is not CLOSED, f"stream closed ({self.error}); got {frames}"
            frames.append(frame)
        return frames

    def rest(self, timeout: float) -> list[Frame]:
        """Every frame until the server ends the stream; fails if it has not after `timeout`."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream still open after {timeout}s; got {frames}")
            try:
                frame = self.frames.get(timeout=remaining)
            except Empty:
                continue
            if frame is CLOSED:
                return frames
            frames.append(frame)

    def close(self) -> None:
        # Stop the reader first: closing a response another greenlet is reading is an error.
        if self._reader is not None:
            self._reader.kill(timeout=5)
        self.response.close()
        self.session.close()
