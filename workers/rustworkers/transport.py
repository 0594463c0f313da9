"""The worker's two pipes: fd 3 (frames in) and fd 4 (frames out).

Owns: blocking whole-frame writes, buffered non-blocking-safe reads through the
`FrameDecoder`, and the "dispatcher gone" state (EOF or EPIPE). No worker logic.
"""

import errno
import os

from . import protocol as P


class Transport:
    def __init__(self, rfd=3, wfd=4, max_body=P.DEFAULT_MAX_BODY):
        self.rfd = rfd
        self.wfd = wfd
        self.decoder = P.FrameDecoder(max_body)
        self.eof = False
        self.broken = False  # the reply pipe is gone: drop all further writes

    def fileno(self):
        return self.rfd

    def send(self, ftype, request_id=0, meta=None, body=b""):
        """Write one frame completely (blocking). Returns False once the pipe is broken."""
        if self.broken:
            return False
        data = memoryview(P.encode_frame(ftype, request_id, meta, body))
        while data:
            try:
                n = os.write(self.wfd, data)
            except InterruptedError:
                continue
            except BlockingIOError:
                import select
                select.select([], [self.wfd], [])
                continue
            except OSError as err:
                if err.errno in (errno.EPIPE, errno.EBADF):
                    self.broken = True
                    return False
                raise
            data = data[n:]
        return True

    def read_available(self, size=1 << 16):
        """One read (call when readable); returns decoded frames; sets `eof` on EOF.
        Raises protocol.ProtocolError on a malformed stream."""
        try:
            chunk = os.read(self.rfd, size)
        except (InterruptedError, BlockingIOError):
            return []
        if not chunk:
            self.eof = True
            return []
        return self.decoder.feed(chunk)

    def read_frame(self):
        """Block until one frame arrives (start-up CONFIG); None on EOF."""
        frames = []
        while not frames:
            frames = self.read_available()
            if self.eof and not frames:
                return None
        if len(frames) > 1:
            self._early = frames[1:]
        return frames[0]

    def take_early(self):
        early = getattr(self, "_early", [])
        self._early = []
        return early
